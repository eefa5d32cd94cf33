"""The one figure writer: folder created, whole file or none, figure closed, one resolution."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from endofed.io.figures import FIGURE_DPI, save_figure


def test_save_figure_creates_the_folder_writes_a_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "a" / "b" / "plot.png")
    assert path == tmp_path / "a" / "b" / "plot.png"
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]  # no partial file left behind
    assert FIGURE_DPI == 100


def test_a_failed_write_leaves_no_file_and_still_closes_the_figure(tmp_path, monkeypatch):
    fig, _ = plt.subplots()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []
    assert not plt.fignum_exists(fig.number)


def test_an_existing_file_is_replaced_whole(tmp_path):
    (tmp_path / "plot.svg").write_text("old")
    fig, _ = plt.subplots()
    save_figure(fig, tmp_path / "plot.svg")
    assert (tmp_path / "plot.svg").read_text().lstrip().startswith("<?xml")
