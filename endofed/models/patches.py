"""Cut volumes into non-overlapping 3D patches (tokens), paste them back, and pick the visible tokens.

Token order (shared with the encoder, the masks and the loss) is **modality-major**: token
``n = c * L + l`` is patch ``l`` of channel (modality) ``c``, where ``L = gx * gy * gz`` and ``l`` runs over
the patch grid in C order (z fastest): ``l = (ix * gy + iy) * gz + iz``. Inside a patch, the ``P = px * py * pz``
voxels are in C order as well (z fastest). Patches may be anisotropic, e.g. 16 x 16 x 4.

These helpers belong to the model (as ``patchify``/``unpatchify`` do in MAE's ``models_mae.py``): the encoder
and the decoder use them, and :mod:`endofed.ssl` imports them from here, never the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def grid_size(spatial: Sequence[int], patch: Sequence[int]) -> tuple[int, int, int]:
    """Patch grid ``(gx, gy, gz)`` of a volume.

    Args:
        spatial: volume size ``(X, Y, Z)`` in voxels.
        patch: patch size ``(px, py, pz)`` in voxels.

    Returns:
        ``(X // px, Y // py, Z // pz)``.

    Raises:
        ValueError: if a size is not 3 positive integers or an axis is not divisible by the patch.
    """
    spatial, patch = tuple(spatial), tuple(patch)
    if len(spatial) != 3 or any(int(s) <= 0 for s in spatial):
        raise ValueError(f"spatial size must be 3 positive integers, got {spatial!r}")
    if len(patch) != 3 or any(int(p) <= 0 for p in patch):
        raise ValueError(f"patch size must be 3 positive integers, got {patch!r}")
    for axis, (s, p) in enumerate(zip(spatial, patch, strict=True)):
        if s % p:
            raise ValueError(f"volume size {spatial!r} is not divisible by patch size {patch!r} (axis {axis})")
    gx, gy, gz = (s // p for s, p in zip(spatial, patch, strict=True))
    return gx, gy, gz


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """Cut a batch of multi-channel volumes into tokens.

    Args:
        x: ``(B, C, X, Y, Z)`` volumes (channel = modality).
        patch: ``(px, py, pz)`` patch size.

    Returns:
        ``(B, C * L, P)`` tokens in modality-major order (see the module docstring), ``P = px * py * pz``.

    Raises:
        ValueError: if ``x`` is not 5-D or its spatial size is not divisible by ``patch``.
    """
    if x.ndim != 5:
        raise ValueError(f"patchify expects (B, C, X, Y, Z), got shape {tuple(x.shape)}")
    b, c = x.shape[:2]
    gx, gy, gz = grid_size(x.shape[2:], patch)
    px, py, pz = patch
    x = x.reshape(b, c, gx, px, gy, py, gz, pz)
    x = x.permute(0, 1, 2, 4, 6, 3, 5, 7)  # (B, C, gx, gy, gz, px, py, pz)
    return x.reshape(b, c * gx * gy * gz, px * py * pz)


def unpatchify(tokens: torch.Tensor, patch: Sequence[int], spatial: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`patchify`.

    Args:
        tokens: ``(B, C * L, P)`` tokens in modality-major order.
        patch: ``(px, py, pz)`` patch size.
        spatial: ``(X, Y, Z)`` size of the volume the tokens came from.

    Returns:
        ``(B, C, X, Y, Z)`` volumes.

    Raises:
        ValueError: if the token count or width does not fit ``patch`` and ``spatial``.
    """
    gx, gy, gz = grid_size(spatial, patch)
    px, py, pz = patch
    per_channel, voxels = gx * gy * gz, px * py * pz
    if tokens.ndim != 3 or tokens.shape[1] % per_channel or tokens.shape[2] != voxels:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not fit patch {tuple(patch)!r} and volume {tuple(spatial)!r} "
            f"(expected (B, C * {per_channel}, {voxels}))"
        )
    b, c = tokens.shape[0], tokens.shape[1] // per_channel
    x = tokens.reshape(b, c, gx, gy, gz, px, py, pz)
    x = x.permute(0, 1, 2, 5, 3, 6, 4, 7)  # (B, C, gx, px, gy, py, gz, pz)
    return x.reshape(b, c, gx * px, gy * py, gz * pz)


def visible_indices(mask: torch.Tensor, visible: int | None = None) -> torch.Tensor:
    """Indices of the visible tokens of every sample, ascending (so modality-major order is kept).

    Args:
        mask: ``(B, N)`` bool, True = hidden; every row must have the same number of visible tokens.
        visible: that number, if the caller knows it (:func:`endofed.ssl.masking.num_visible`). Pass it in
            training loops: without it the count is read back from the device (a host synchronisation) and checked.

    Returns:
        ``(B, visible)`` int64 token indices.

    Raises:
        ValueError: if ``mask`` is not 2-D bool, or (without ``visible``) rows differ in their visible count.
    """
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a (B, N) bool tensor, got shape {tuple(mask.shape)} and dtype {mask.dtype}")
    if visible is None:
        counts = sorted(set((~mask).sum(dim=1).tolist()))
        if len(counts) != 1:
            raise ValueError(f"every sample must have the same number of visible tokens, got counts {counts}")
        visible = int(counts[0])
    if not 0 < visible <= mask.shape[1]:
        raise ValueError(f"visible token count must be in [1, {mask.shape[1]}], got {visible!r}")
    # A stable sort of 0 (visible) before 1 (hidden) keeps the visible tokens in ascending index order.
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
    return order[:, :visible]
