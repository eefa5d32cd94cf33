"""The dashboard's plots as SVG bytes (matplotlib's object API with the SVG canvas: no pyplot state, no CDN)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

EMPTY_NOTE = "no rounds yet"


def _svg(figure: Figure) -> bytes:
    """Render ``figure`` to SVG bytes."""
    FigureCanvasSVG(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    return buffer.getvalue()


def loss_svg(series: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> bytes:
    """Training loss per round, one panel per phase, one line per site (:func:`endofed.dashboard.view.loss_series`)."""
    phases = list(series) or [EMPTY_NOTE]
    figure = Figure(figsize=(4.2 * len(phases), 3.0))
    for index, phase in enumerate(phases):
        axes = figure.add_subplot(1, len(phases), index + 1)
        for site, points in sorted(series.get(phase, {}).items()):
            axes.plot([r for r, _ in points], [loss for _, loss in points], marker="o", label=site)
        axes.set_title(f"{phase}: train loss")
        axes.set_xlabel("round")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if series.get(phase):
            axes.legend(fontsize="small")
    return _svg(figure)


def bytes_svg(rounds: Sequence[tuple[str, float, float]]) -> bytes:
    """Megabytes sent to and received from all sites per round (:func:`endofed.dashboard.view.bytes_series`)."""
    figure = Figure(figsize=(max(4.0, 0.6 * len(rounds) + 2.0), 3.0))
    axes = figure.add_subplot(1, 1, 1)
    positions = list(range(len(rounds)))
    width = 0.4
    axes.bar([p - width / 2 for p in positions], [d / 1e6 for _, d, _ in rounds], width, label="down (to sites)")
    axes.bar([p + width / 2 for p in positions], [u / 1e6 for _, _, u in rounds], width, label="up (from sites)")
    axes.set_xticks(positions, [label for label, _, _ in rounds], rotation=45, ha="right", fontsize="small")
    axes.set_ylabel("MB")
    axes.set_title("bytes per round" if rounds else f"bytes per round: {EMPTY_NOTE}")
    axes.grid(alpha=0.3, axis="y")
    if rounds:
        axes.legend(fontsize="small")
    return _svg(figure)
