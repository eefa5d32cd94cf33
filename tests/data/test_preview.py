from __future__ import annotations

import numpy as np
import pytest

from endofed.data.preview import checkerboard, write_preview


def test_checkerboard_by_hand():
    first, second = np.zeros((4, 6)), np.ones((4, 6))
    expected = np.array(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(checkerboard(first, second, (2, 3)), expected)


def test_write_preview_makes_a_png(tmp_path):
    image = np.random.default_rng(0).random((2, 32, 32, 8), dtype=np.float32)
    path = write_preview([("a", image), ("b", image)], (2.0, 2.0, 4.0), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no case to preview"):
        write_preview([], (1.0, 1.0, 1.0), tmp_path / "q.png")
