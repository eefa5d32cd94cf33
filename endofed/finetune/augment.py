"""Batch augmentation for fine-tuning, on tensors of any device, with an explicit ``torch.Generator``.

Three steps, in this order, each a pure function of its drawn parameters so that it can be tested alone:

* :func:`flip_batch`: per-sample flips along each spatial axis (exact permutations of voxels).
* :func:`affine_batch`: a small rotation (about each axis, at most ``max_rotation_deg``) and scaling around
  the volume centre, done in millimetres (the voxel ``spacing`` makes thick-slice volumes rotate as the body
  would, not as an anisotropic voxel grid), resampled with ``grid_sample``: images linearly, validity masks
  with nearest neighbour. What comes from outside the volume is zero and invalid.
* :func:`intensity_batch`: per-case, per-channel ``x * scale + shift`` inside the valid voxels only, so the
  air outside the field of view and a missing modality stay exactly zero.

:func:`random_augment` draws all parameters from one generator on the batch's device (no host round trip)
and applies the three steps. Images are ``(B, C, X, Y, Z)`` float, masks ``(B, C, X, Y, Z)`` bool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SPATIAL_AXES = 3


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random augmentation (reasoned defaults; the seed paper does not publish its own).

    Attributes:
        flip_prob: chance of flipping each axis in ``flip_axes``, per case.
        flip_axes: spatial axes (0 = X, 1 = Y, 2 = Z) that may be flipped.
        max_rotation_deg: rotation about each axis drawn from ``[-max, max]`` degrees.
        scale_range: isotropic scale factor drawn from ``[low, high]`` (> 1 zooms in).
        intensity_scale: per-channel factor drawn from ``[1 - s, 1 + s]``.
        intensity_shift: per-channel offset drawn from ``[-b, b]`` (images are normalised to [0, 1]).
        spacing: voxel size in mm along X, Y, Z (``DataConfig.target_spacing``), for physical rotations.
    """

    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] = (0, 1, 2)
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob!r}")
        if any(axis not in range(SPATIAL_AXES) for axis in self.flip_axes):
            raise ValueError(f"flip_axes must be among 0, 1, 2, got {self.flip_axes!r}")
        if not 0.0 <= self.max_rotation_deg <= 45.0:
            raise ValueError(f"max_rotation_deg must be in [0, 45], got {self.max_rotation_deg!r}")
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range!r}")
        if not 0.0 <= self.intensity_scale < 1.0 or self.intensity_shift < 0.0:
            raise ValueError(
                f"need 0 <= intensity_scale < 1 and intensity_shift >= 0, got {self.intensity_scale!r} "
                f"and {self.intensity_shift!r}"
            )
        if len(self.spacing) != SPATIAL_AXES or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive values, got {self.spacing!r}")


def _check_pair(image: torch.Tensor, mask: torch.Tensor) -> None:
    """Require ``image`` and ``mask`` of one ``(B, C, X, Y, Z)`` shape, the mask bool."""
    if image.ndim != 5 or mask.shape != image.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"need image (B, C, X, Y, Z) and a bool mask of the same shape, got {tuple(image.shape)} and "
            f"{tuple(mask.shape)} {mask.dtype}"
        )


def flip_batch(image: torch.Tensor, mask: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each case along the spatial axes chosen for it.

    Args:
        image: ``(B, C, X, Y, Z)``.
        mask: ``(B, C, X, Y, Z)`` bool.
        flips: ``(B, 3)`` bool, ``flips[b, a]`` = flip case ``b`` along spatial axis ``a`` (X, Y, Z).

    Returns:
        The flipped ``(image, mask)`` (new tensors).
    """
    _check_pair(image, mask)
    if flips.shape != (image.shape[0], SPATIAL_AXES):
        raise ValueError(f"flips must be (B, 3) = ({image.shape[0]}, 3), got {tuple(flips.shape)}")
    for axis in range(SPATIAL_AXES):
        chosen = flips[:, axis].view(-1, 1, 1, 1, 1)
        image = torch.where(chosen, image.flip(axis + 2), image)
        mask = torch.where(chosen, mask.flip(axis + 2), mask)
    return image, mask


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Rotation ``Rz @ Ry @ Rx`` about the X, Y and Z axes.

    Args:
        angles: ``(B, 3)`` radians about X, Y, Z.

    Returns:
        ``(B, 3, 3)`` rotation matrices (same dtype and device).
    """
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    cx, cy, cz, sx, sy, sz = cos[:, 0], cos[:, 1], cos[:, 2], sin[:, 0], sin[:, 1], sin[:, 2]
    rx = matrix([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    ry = matrix([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = matrix([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return rz @ ry @ rx


def affine_theta(
    angles: torch.Tensor, scales: torch.Tensor, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> torch.Tensor:
    """``F.affine_grid`` matrices of a rotation and scaling in millimetres about the volume centre.

    An output voxel at ``p`` (mm from the centre) samples the input at ``R p / s``, so ``s > 1`` zooms in.
    In the normalised coordinates of ``affine_grid`` (half-extent ``E = diag(n * spacing / 2)``) this is
    ``E^-1 R E / s``; ``affine_grid`` orders its axes (W, H, D) = (Z, Y, X), hence the reversal.

    Args:
        angles: ``(B, 3)`` radians about X, Y, Z.
        scales: ``(B,)`` scale factors.
        shape: ``(X, Y, Z)`` voxels.
        spacing: ``(sx, sy, sz)`` mm.

    Returns:
        ``(B, 3, 4)`` matrices (zero translation).
    """
    half = torch.tensor([n * s / 2.0 for n, s in zip(shape, spacing, strict=True)], dtype=angles.dtype)
    half = half.to(angles.device)
    linear = rotation_matrices(angles) * (half[None, None, :] / half[None, :, None])  # E^-1 R E
    linear = linear / scales.view(-1, 1, 1)
    linear = linear.flip(1).flip(2)  # (X, Y, Z) -> (Z, Y, X) rows and columns
    return torch.cat([linear, torch.zeros_like(linear[:, :, :1])], dim=2)


def affine_batch(
    image: torch.Tensor,
    mask: torch.Tensor,
    angles: torch.Tensor,
    scales: torch.Tensor,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate and scale each case about its centre; image linear, mask nearest, outside = 0 / invalid.

    Args:
        image: ``(B, C, X, Y, Z)`` float.
        mask: ``(B, C, X, Y, Z)`` bool.
        angles: ``(B, 3)`` radians about X, Y, Z.
        scales: ``(B,)`` scale factors.
        spacing: voxel size in mm.

    Returns:
        The transformed ``(image, mask)``.
    """
    _check_pair(image, mask)
    b = image.shape[0]
    if angles.shape != (b, SPATIAL_AXES) or scales.shape != (b,):
        raise ValueError(f"need angles (B, 3) and scales (B,), got {tuple(angles.shape)} and {tuple(scales.shape)}")
    shape = (int(image.shape[2]), int(image.shape[3]), int(image.shape[4]))
    theta = affine_theta(angles.float(), scales.float(), shape, spacing)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = F.grid_sample(mask.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped.to(image.dtype), valid > 0.5


def intensity_batch(image: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``image * scale + shift`` per case and channel inside valid voxels; invalid voxels become 0.

    Args:
        image: ``(B, C, X, Y, Z)``.
        mask: ``(B, C, X, Y, Z)`` bool.
        scale: ``(B, C)`` factors.
        shift: ``(B, C)`` offsets.

    Returns:
        The jittered image.
    """
    _check_pair(image, mask)
    if scale.shape != image.shape[:2] or shift.shape != image.shape[:2]:
        raise ValueError(
            f"scale and shift must be (B, C) = {tuple(image.shape[:2])}, got {tuple(scale.shape)} and "
            f"{tuple(shift.shape)}"
        )
    jittered = image * scale[:, :, None, None, None] + shift[:, :, None, None, None]
    return torch.where(mask, jittered, torch.zeros_like(jittered))


def _uniform(size: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """``U[low, high)`` samples on the generator's device."""
    return low + (high - low) * torch.rand(size, generator=generator, device=generator.device)


def random_augment(
    image: torch.Tensor, mask: torch.Tensor, params: AugmentParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, rotate/scale and intensity-jitter a batch with parameters drawn from ``generator``.

    Args:
        image: ``(B, C, X, Y, Z)`` float on the generator's device.
        mask: ``(B, C, X, Y, Z)`` bool validity.
        params: augmentation ranges.
        generator: random source (its device must be the batch's).

    Returns:
        The augmented ``(image, mask)``.
    """
    _check_pair(image, mask)
    b, c = image.shape[:2]
    allowed = torch.zeros(SPATIAL_AXES, dtype=torch.bool, device=generator.device)
    allowed[list(params.flip_axes)] = True
    flips = (_uniform((b, SPATIAL_AXES), 0.0, 1.0, generator) < params.flip_prob) & allowed
    image, mask = flip_batch(image, mask, flips)
    max_angle = math.radians(params.max_rotation_deg)
    angles = _uniform((b, SPATIAL_AXES), -max_angle, max_angle, generator)
    scales = _uniform((b,), *params.scale_range, generator)
    image, mask = affine_batch(image, mask, angles, scales, params.spacing)
    scale = _uniform((b, c), 1.0 - params.intensity_scale, 1.0 + params.intensity_scale, generator)
    shift = _uniform((b, c), -params.intensity_shift, params.intensity_shift, generator)
    return intensity_batch(image, mask, scale, shift), mask
