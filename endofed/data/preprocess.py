"""Turn one case's T1 + T2 volumes into the model's input: a ``(2, X, Y, Z)`` tensor and validity masks.

Pipeline (ARCHITECTURE.md §2), folded so that each image is interpolated exactly once:

1. the output grid is the reference's (T2's, else T1's) grid re-oriented to the nearest RAS axes, at the
   target spacing, ``roi_size`` voxels, centred on the reference's field of view (``geometry.target_grid``);
2. each modality is resampled onto that grid **by world coordinates** (its own affine), with MONAI's
   ``SpatialResample`` — so T1 lands on the T2 grid whatever its own grid, FOV and orientation;
3. a validity mask per modality marks the output voxels inside that modality's field of view;
4. each channel is robustly normalised (percentiles over its valid, non-zero voxels) and zeroed outside its mask.

Channel order is fixed: 0 = T1, 1 = T2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from endofed.config import DataConfig
from endofed.data.geometry import fov_mask, target_grid
from endofed.data.manifest import MODALITIES
from endofed.data.nifti import Volume
from endofed.errors import DataError

_MONAI_MODE: dict[str, str | int] = {"linear": "bilinear", "nearest": "nearest", "bspline": 3}


@dataclass(frozen=True)
class Preprocessed:
    """Model-ready arrays of one case.

    Attributes:
        image: ``(2, X, Y, Z)`` float32, channel 0 = T1, 1 = T2, normalised, 0 outside the masks.
        mask: ``(2, X, Y, Z)`` uint8, 1 where that modality has data.
        affine: ``(4, 4)`` affine of the output grid (world mm, RAS+).
    """

    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


def robust_normalise(values: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float], clip: bool) -> np.ndarray:
    """Map the ``percentiles`` of the valid, non-zero voxels to 0 and 1; invalid voxels become 0.

    Exact zeros (a zero-filled background or padding) are left out of the percentiles. When both percentiles
    coincide (an object on a constant background filling more than ``100 - hi`` percent of the image) the
    maximum takes the place of the upper one, so that the object still maps to 1.

    Args:
        values: intensities, any shape.
        valid: boolean mask of the same shape; percentiles are computed over these voxels only.
        percentiles: ``(lo, hi)`` in [0, 100].
        clip: clip the result to [0, 1]; otherwise only below 0 (values above the upper percentile, such as
            a bright lesion, keep their contrast).

    Returns:
        float32 array of ``values``' shape. A constant image maps to 0 everywhere.
    """
    out = np.zeros(values.shape, dtype=np.float32)
    sample = values[valid]
    sample = sample[sample != 0]
    if sample.size == 0:
        return out
    lo, hi = np.percentile(sample, percentiles)
    if hi <= lo:
        hi = float(sample.max())
    scale = float(hi - lo)
    if scale <= 0:
        return out
    scaled = np.clip((values - lo) / scale, 0.0, 1.0 if clip else None)
    out[valid] = scaled[valid]
    return out


def resample_to_grid(
    volume: Volume, dst_affine: np.ndarray, dst_shape: tuple[int, int, int], interpolation: str
) -> np.ndarray:
    """Resample ``volume`` onto the grid ``(dst_affine, dst_shape)`` by world coordinates (0 outside)."""
    source = MetaTensor(torch.from_numpy(volume.array)[None], affine=torch.from_numpy(volume.affine))
    resample = SpatialResample(mode=_MONAI_MODE[interpolation], padding_mode="zeros", dtype=np.float32)
    out = resample(source, dst_affine=torch.from_numpy(dst_affine), spatial_size=dst_shape)
    return np.asarray(out[0].numpy(), dtype=np.float32)


def preprocess_case(t1: Volume | None, t2: Volume | None, cfg: DataConfig) -> Preprocessed:
    """Put T1 and T2 of one exam on one grid (T2's, by world coordinates) and normalise them.

    Args:
        t1: the T1 volume, or ``None`` when missing (only allowed by ``cfg.allow_missing_modality``).
        t2: the T2 volume, or ``None`` likewise.
        cfg: preprocessing settings.

    Raises:
        DataError: a modality is missing and that is not allowed, or T1 and T2 do not overlap enough
            in world coordinates.
    """
    volumes = {"t1": t1, "t2": t2}
    missing = [name for name, vol in volumes.items() if vol is None]
    if len(missing) == 2:
        raise DataError("case has neither T1 nor T2", "missing_modality")
    if missing and not cfg.allow_missing_modality:
        raise DataError(
            f"{missing[0].upper()} is missing (set data.allow_missing_modality: true to accept)",
            "missing_modality",
        )
    reference = t2 if t2 is not None else t1
    assert reference is not None
    shape = cfg.roi_size
    grid = target_grid(reference.affine, reference.shape, cfg.target_spacing, cfg.roi_size)
    image = np.zeros((2, *shape), dtype=np.float32)
    mask = np.zeros((2, *shape), dtype=np.uint8)
    for channel, name in enumerate(MODALITIES):
        volume = volumes[name]
        if volume is None:
            continue
        valid = fov_mask(grid, shape, volume.affine, volume.shape)
        resampled = resample_to_grid(volume, grid, shape, cfg.interpolation)
        image[channel] = robust_normalise(resampled, valid, cfg.norm_percentiles, cfg.norm_clip)
        mask[channel] = valid
    result = Preprocessed(image=image, mask=mask, affine=grid)
    overlap = overlap_fraction(result)
    if t1 is not None and t2 is not None and overlap < cfg.min_overlap_fraction:
        raise DataError(
            f"T1 and T2 do not overlap in world coordinates: T1 covers {overlap:.1%} of the T2 region "
            f"(minimum {cfg.min_overlap_fraction:.0%}); check that both belong to the same exam",
            "no_overlap",
        )
    return result


def overlap_fraction(pre: Preprocessed) -> float:
    """Fraction of the T2-valid output voxels that T1 also covers (0.0 when T2 covers nothing)."""
    t1_valid, t2_valid = pre.mask[0] > 0, pre.mask[1] > 0
    return float(t1_valid[t2_valid].mean()) if t2_valid.any() else 0.0
