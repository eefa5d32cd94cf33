"""A PNG of preprocessed cases, so a person can *see* that T1 sits on T2 (local only: it shows images).

One row per case: T1 and T2 mid axial slices, then a T1/T2 checkerboard (tiles taken alternately from each,
the usual registration check) on the mid axial and mid coronal slices: on an aligned case, edges run on
unbroken from tile to tile. Black areas are outside a modality's field of view (its validity mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from endofed.io.figures import save_figure  # noqa: E402

CHECKER_TILE_MM = 16.0  # side of a checkerboard square


def checkerboard(first: np.ndarray, second: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """2D image taking ``tile`` = (rows, cols) blocks alternately from ``first`` (block 0, 0) and ``second``."""
    rows, cols = np.indices(first.shape)
    use_first = ((rows // tile[0]) + (cols // tile[1])) % 2 == 0
    return np.where(use_first, first, second)


def write_preview(cases: Sequence[tuple[str, np.ndarray]], spacing: tuple[float, float, float], path: Path) -> Path:
    """Draw ``(title, image (2, X, Y, Z))`` pairs into one PNG at ``path``.

    Args:
        cases: row titles and preprocessed images (channel 0 = T1, 1 = T2).
        spacing: voxel size (mm) of the images, for the aspect ratio of the coronal view.
        path: output PNG.
    """
    if not cases:
        raise ValueError("no case to preview")
    fig, axes = plt.subplots(len(cases), 4, figsize=(11, 2.8 * len(cases)), squeeze=False)
    for row, (title, image) in zip(axes, cases, strict=True):
        image = np.asarray(image, dtype=np.float32)
        mid_z, mid_y = image.shape[3] // 2, image.shape[2] // 2
        axial_aspect, coronal_aspect = spacing[1] / spacing[0], spacing[2] / spacing[0]
        t1_axial, t2_axial = image[0, :, :, mid_z].T, image[1, :, :, mid_z].T
        for axis, picture, label in ((row[0], t1_axial, "T1 axial"), (row[1], t2_axial, "T2 axial")):
            axis.imshow(picture, cmap="gray", origin="lower", vmin=0, vmax=1, aspect=axial_aspect)
            axis.set_title(f"{title}: {label}", fontsize=8)
        coronal = (image[0, :, mid_y, :].T, image[1, :, mid_y, :].T)
        tile_x, tile_y, tile_z = (max(1, round(CHECKER_TILE_MM / s)) for s in spacing)
        views = (
            (row[2], checkerboard(t1_axial, t2_axial, (tile_y, tile_x)), "T1/T2 checkerboard, axial", axial_aspect),
            (row[3], checkerboard(*coronal, (tile_z, tile_x)), "T1/T2 checkerboard, coronal", coronal_aspect),
        )
        for axis, picture, label, aspect in views:
            axis.imshow(picture, cmap="gray", origin="lower", vmin=0, vmax=1, aspect=aspect)
            axis.set_title(f"{title}: {label}", fontsize=8)
        for axis in row:
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle("Preprocessed T1/T2: on aligned cases, edges continue across checkerboard tiles", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
