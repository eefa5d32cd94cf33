"""A PNG of MAE reconstructions, so a person can see what pre-training learned (local only: it shows images).

One row per case and modality, three mid axial slices: input, masked input (hidden patches black) and
reconstruction (visible patches copied, hidden ones predicted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLUMNS = ("input", "masked", "reconstruction")


def write_reconstruction_preview(
    cases: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    path: Path,
    modality_names: Sequence[str] = ("T1", "T2"),
) -> Path:
    """Draw ``(title, preview)`` pairs into one PNG at ``path``.

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
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(8, 2.6 * len(rows)), squeeze=False)
    for axis_row, (title, preview, modality) in zip(axes, rows, strict=True):
        missing = [key for key in COLUMNS if key not in preview]
        if missing:
            raise ValueError(f"preview of {title!r} lacks {missing}")
        reference = np.asarray(preview["input"][modality], dtype=np.float32)
        mid_z = reference.shape[2] // 2
        low, high = float(reference.min()), float(reference.max())
        for axis, key in zip(axis_row, COLUMNS, strict=True):
            picture = np.asarray(preview[key][modality], dtype=np.float32)[:, :, mid_z].T
            axis.imshow(picture, cmap="gray", origin="lower", vmin=low, vmax=max(high, low + 1e-6))
            axis.set_title(f"{title}: {modality_names[modality]} {key}", fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle("MAE reconstruction, mid axial slice", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
