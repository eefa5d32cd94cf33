"""Near-duplicate cases by image content: the same scan filed twice after a rescale, re-typing or re-orientation.

The exact checks (identical files, identical decoded voxels; :mod:`endofed.data.site`) miss a copy whose values
were rescaled (a different ``scl_slope``, int16 -> float32) or whose array was flipped with its affine. The
preprocessed case is the same for those copies (oriented to RAS, resampled, percentile-normalised), so each
modality of each case is summarised by a thumbnail of its preprocessed image: block means on a coarse grid,
standardised. Two cases whose thumbnails of one modality correlate at or above a threshold are reported as
near duplicates. On the synthetic benchmark the highest correlation between different subjects is 0.96
(T2, 16 x 16 x 8 grid, demo sites); a rescaled copy correlates at 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THUMBNAIL_GRID = (16, 16, 8)  # block means per axis of the preprocessed ROI


def _block_means(volume: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """Means of ``volume`` over ``grid`` near-equal blocks per axis (axes shorter than the grid keep their size)."""
    out = np.asarray(volume, dtype=np.float64)
    for axis, n in enumerate(grid):
        length = out.shape[axis]
        edges = np.linspace(0, length, min(n, length) + 1).round().astype(int)
        sums = np.add.reduceat(out, edges[:-1], axis=axis)
        counts = np.diff(edges).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = sums / counts
    return out


def thumbnail(image: np.ndarray, mask: np.ndarray, grid: Sequence[int] = THUMBNAIL_GRID) -> list[list[float] | None]:
    """Standardised block-mean thumbnail of each channel of a preprocessed case (``None``: channel absent or flat).

    Args:
        image: ``(C, X, Y, Z)`` preprocessed intensities.
        mask: ``(C, X, Y, Z)`` validity mask (a channel without valid voxels has no thumbnail).
        grid: blocks per axis.

    Returns:
        Per channel, the thumbnail flattened to a list (zero mean, unit variance, 4 decimals), or ``None``.
    """
    thumbs: list[list[float] | None] = []
    for channel, valid in zip(image, mask, strict=True):
        if not np.any(valid):
            thumbs.append(None)
            continue
        values = _block_means(channel, grid).reshape(-1)
        spread = values.std()
        thumbs.append(None if spread == 0 else [round(float(v), 4) for v in (values - values.mean()) / spread])
    return thumbs


def near_duplicate_pairs(
    thumbs: Sequence[Sequence[Sequence[float] | None]], threshold: float
) -> list[tuple[int, int, int, float]]:
    """Pairs of cases whose thumbnails of one channel correlate at or above ``threshold``.

    Args:
        thumbs: per case, per channel, a thumbnail from :func:`thumbnail` (or ``None``).
        threshold: Pearson correlation in (0, 1]; 0 or less turns the check off.

    Returns:
        ``(earlier, later, channel, correlation)`` for each later case and its best-matching earlier case
        (at most one pair per later case), in case order.
    """
    if threshold <= 0 or len(thumbs) < 2:
        return []
    found: dict[int, tuple[int, int, int, float]] = {}
    for channel in range(max(len(t) for t in thumbs)):
        present = [i for i, t in enumerate(thumbs) if channel < len(t) and t[channel] is not None]
        if len(present) < 2:
            continue
        matrix = np.asarray([thumbs[i][channel] for i in present], dtype=np.float64)
        if len({row.shape for row in matrix}) != 1:
            continue
        corr = matrix @ matrix.T / matrix.shape[1]
        for b in range(1, len(present)):
            a = int(np.argmax(corr[b, :b]))
            value = float(corr[b, a])
            later, earlier = present[b], present[a]
            if value >= threshold and (later not in found or value > found[later][3]):
                found[later] = (earlier, later, channel, round(value, 4))
    return [found[k] for k in sorted(found)]
