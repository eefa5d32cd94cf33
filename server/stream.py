"""Replies one at a time, as they arrive: the grid wrapper behind the coordinator's in-place aggregation.

Flower's ``Grid.send_and_receive`` returns a list of every reply, so a round holds all sites' weights in memory
at once before ``aggregate_train`` sees any of them. :class:`StreamingGrid` pushes the same messages but returns
a generator: it pulls the pending replies a few message ids at a time and yields each reply as soon as it is
there, so the strategy can fold it into a running sum and drop it (``server/strategies.py``). At most
``batch`` replies are in flight in this process at once, whatever the number of sites.

It keeps Flower's contract otherwise: replies in any order, the same ``timeout`` (replies not there by then are
not waited for), and every other ``Grid`` method passed through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

PULL_BATCH = 4  # message ids per pull: bounds the replies held at once
POLL_S = 0.2  # pause between sweeps that found nothing (Flower's own grid sleeps 3 s between pulls)


class StreamingGrid:
    """A ``Grid`` whose ``send_and_receive`` yields replies one by one (see the module docstring)."""

    def __init__(self, grid: Grid, batch: int = PULL_BATCH, poll_s: float = POLL_S) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._grid, self._batch, self._poll_s = grid, batch, poll_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        """Push ``messages`` now; the returned generator yields their replies as they arrive, until ``timeout``."""
        pending = [message_id for message_id in self._grid.push_messages(messages) if message_id]
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._replies(pending, deadline)

    def _replies(self, pending: list[str], deadline: float | None) -> Iterator[Message]:
        while pending and (deadline is None or time.monotonic() < deadline):
            answered: set[str] = set()
            for start in range(0, len(pending), self._batch):
                for reply in self._grid.pull_messages(pending[start : start + self._batch]):
                    answered.add(reply.metadata.reply_to_message_id)
                    yield reply
            if answered:
                pending = [message_id for message_id in pending if message_id not in answered]
            else:
                time.sleep(self._poll_s)
