"""Figures on disk: the one way endofed writes a matplotlib figure, and the MAE reconstruction preview.

:func:`save_figure` is the only ``savefig`` in the code base: every figure gets the same resolution and
tight bounding box, its folder is created, the file appears whole or not at all (written next to its final
name, then renamed), and the figure is closed, so a long run that draws many does not keep them in memory.

The reconstruction preview draws the arrays of :func:`endofed.ssl.reconstruction.reconstruction_preview`
(pure tensor code stays in ``ssl``; this module holds the drawing and the writing). It shows images, so it
stays at the site like every figure of patient data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from endofed.errors import EndofedError  # noqa: E402
from endofed.io.files import writing  # noqa: E402

FIGURE_DPI = 100  # one resolution for every figure endofed writes
RECONSTRUCTION_COLUMNS = ("input", "masked", "reconstruction")


def figure_format(path: Path) -> str:
    """The image format of a figure path (from its suffix; PNG without one), checked before any work is done.

    Raises:
        EndofedError: matplotlib cannot write that format (e.g. ``--preview out.csv``).
    """
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise EndofedError(f"cannot draw a figure as .{fmt}: {path} (use one of .{', .'.join(sorted(supported))})")
    return fmt


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG without one) and close it.

    The parent folder is created. The figure is first written to a hidden file in the same folder and then
    renamed over ``path``, so a reader never sees half a file. The figure is closed even if writing fails.

    Args:
        fig: the figure (``tight_layout`` or not is the caller's choice; the saved box is tight either way).
        path: destination file.

    Returns:
        ``path``.
    """
    path = Path(path)
    fmt = figure_format(path)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with writing(path), partial.open("wb") as handle:
            fig.savefig(handle, format=fmt, dpi=FIGURE_DPI, bbox_inches="tight")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        plt.close(fig)
    return path


def write_reconstruction_preview(
    cases: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    path: Path,
    modality_names: Sequence[str] = ("T1", "T2"),
) -> Path:
    """Draw ``(title, preview)`` pairs into one PNG at ``path``: what pre-training learned, for a person to see.

    One row per case and modality, three mid axial slices: input, masked input (hidden patches black) and
    reconstruction (visible patches copied, hidden ones predicted).

    Args:
        cases: row titles and previews from :func:`endofed.ssl.reconstruction.reconstruction_preview`
            (``input``, ``masked``, ``reconstruction``: ``(M, X, Y, Z)`` arrays).
        path: output PNG (parent folders are created).
        modality_names: names of the ``M`` channels.

    Returns:
        ``path``.

    Raises:
        ValueError: if there is no case or a preview lacks an array.
    """
    if not cases:
        raise ValueError("no case to preview")
    rows = [(title, preview, m) for title, preview in cases for m in range(len(modality_names))]
    for title, preview, _ in rows:
        missing = [key for key in RECONSTRUCTION_COLUMNS if key not in preview]
        if missing:
            raise ValueError(f"preview of {title!r} lacks {missing}")
    columns = len(RECONSTRUCTION_COLUMNS)
    fig, axes = plt.subplots(len(rows), columns, figsize=(8, 2.6 * len(rows)), squeeze=False)
    for axis_row, (title, preview, modality) in zip(axes, rows, strict=True):
        reference = np.asarray(preview["input"][modality], dtype=np.float32)
        mid_z = reference.shape[2] // 2
        low, high = float(reference.min()), float(reference.max())
        for axis, key in zip(axis_row, RECONSTRUCTION_COLUMNS, strict=True):
            picture = np.asarray(preview[key][modality], dtype=np.float32)[:, :, mid_z].T
            axis.imshow(picture, cmap="gray", origin="lower", vmin=low, vmax=max(high, low + 1e-6))
            axis.set_title(f"{title}: {modality_names[modality]} {key}", fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle("MAE reconstruction, mid axial slice", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
