"""Reconstruction loss of masked image modelling: MSE on per-patch-normalised voxels of hidden tokens only.

Normalising every target patch by its own mean and standard deviation (MAE's ``norm_pix_loss``) makes the
task about structure rather than absolute intensity, which also removes most of the site-to-site intensity
differences of MRI. The variance is the population variance (no Bessel correction) and ``eps`` is added
before the square root.
"""

from __future__ import annotations

import torch


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise every patch by its own mean and variance.

    Args:
        target: ``(B, N, P)`` voxels per token (from :func:`endofed.models.patches.patchify`).
        eps: added to the variance before the square root (constant patches become all zero).

    Returns:
        ``(B, N, P)`` float32 ``(target - mean) / sqrt(var + eps)`` over the last axis.
    """
    target = target.float()
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True, correction=0)
    return (target - mean) / torch.sqrt(var + eps)


def masked_patch_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Mean squared error on normalised patches, averaged over hidden (and valid) tokens only.

    Args:
        pred: ``(B, N, P)`` predictions in normalised-patch units (any float dtype; computed in float32).
        target: ``(B, N, P)`` true voxels per token (un-normalised).
        mask: ``(B, N)`` bool, True = hidden; only these tokens count.
        valid: optional ``(B, N)`` bool, False for tokens wholly outside the field of view (never counted).
        eps: see :func:`normalize_patches`.

    Returns:
        Scalar float32 loss; 0 when no token counts (no division by zero, no host synchronisation).

    Raises:
        ValueError: if the shapes do not match.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be (B, N, P), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if mask.shape != pred.shape[:2] or (valid is not None and valid.shape != mask.shape):
        shapes = (tuple(mask.shape), None if valid is None else tuple(valid.shape))
        raise ValueError(f"mask (and valid) must be {tuple(pred.shape[:2])}, got {shapes}")
    counted = mask if valid is None else mask & valid
    weight = counted.to(torch.float32)  # (B, N)
    per_token = (pred.float() - normalize_patches(target, eps)).pow(2).mean(dim=-1)  # (B, N)
    return (per_token * weight).sum() / weight.sum().clamp_min(1.0)
