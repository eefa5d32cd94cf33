"""The server's default send window: max_in_flight when set, else one beyond the sites that run at once."""

from __future__ import annotations

import pytest

from server.stream import send_window


@pytest.mark.parametrize(
    ("max_in_flight", "parallel", "expected"),
    [
        (0, 2, 3),  # simulation on 2 cores, 1 CPU per site: 2 run, a third waits ready
        (0, 1, 2),
        (0, 0, 0),  # deployment (nothing known about parallelism): every site at once
        (4, 2, 4),  # a configured window wins
        (1, 0, 1),
        (200, 3, 200),  # a window beyond the sites: all at once
    ],
)
def test_send_window(max_in_flight, parallel, expected):
    assert send_window(max_in_flight, parallel) == expected


def test_negative_inputs_are_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        send_window(-1, 2)
    with pytest.raises(ValueError, match="must be >= 0"):
        send_window(0, -3)
