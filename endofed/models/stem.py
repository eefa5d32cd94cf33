"""Patch embeddings of the ViT3D encoder: how one modality's patch of voxels becomes one token.

``linear`` is ViT's: one matrix over the patch's ``P`` voxels. It cannot tell "a small bright blob somewhere
in this 40 x 40 x 16 mm patch" from its weights, because every position inside the patch has its own weights;
on the synthetic benchmark the linear embedding did not learn to find a T1-bright endometrioma that a simple
threshold finds (test AUC 0.51 against 0.99, ``docs/evidence-round2-notes.md``).

``mlp`` cuts each patch into sub-blocks (e.g. 4 x 4 x 2 voxels), embeds every sub-block with the same small
two-layer MLP, pools the sub-block features by maximum and by mean, and projects them to the token width: a
patch-local, translation-equivariant stem (like a convolution with kernel = stride, followed by pooling) that
sees only its own patch, so masked image modelling stays exact (a visible token carries no voxel of a masked
one).

``mlp_joint`` is the ``mlp`` embedding reading *every* modality at the token's location: each sub-block MLP
sees the T1 and the T2 voxels of its sub-block together, so "T1 bright and T2 dark here" (an endometrioma,
not a haemorrhagic cyst or fat) is one feature of one sub-block rather than a relation between two tokens
the transformer must learn. A visible T1 token then carries the T2 voxels of its location, so masked image
modelling must hide a location in every modality at once (``pretrain.mask_mode: shared``, which the config
enforces); each modality keeps its own MLP and its own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from endofed.config import PATCH_EMBEDS


def sub_block_grid(patch: Sequence[int], block: Sequence[int]) -> tuple[int, int, int]:
    """Sub-blocks per patch axis; raises ``ValueError`` unless ``block`` divides ``patch`` on every axis."""
    if len(patch) != 3 or len(block) != 3 or any(b < 1 or p % b for p, b in zip(patch, block, strict=True)):
        raise ValueError(f"stem block {tuple(block)} must divide the patch size {tuple(patch)} on every axis")
    return patch[0] // block[0], patch[1] // block[1], patch[2] // block[2]


def split_sub_blocks(patches: torch.Tensor, patch: Sequence[int], block: Sequence[int]) -> torch.Tensor:
    """Regroup flattened patches into flattened sub-blocks.

    Args:
        patches: ``(..., P)`` voxels of patches in ``(px, py, pz)`` order (:func:`endofed.models.patches.patchify`).
        patch: ``(px, py, pz)``.
        block: ``(bx, by, bz)`` dividing ``patch``.

    Returns:
        ``(..., S, Q)``: ``S`` sub-blocks (x slowest) of ``Q = bx * by * bz`` voxels each (``(bx, by, bz)`` order).
    """
    sx, sy, sz = sub_block_grid(patch, block)
    lead = patches.shape[:-1]
    grid = patches.reshape(*lead, sx, block[0], sy, block[1], sz, block[2])
    n = len(lead)
    order = [*range(n), n, n + 2, n + 4, n + 1, n + 3, n + 5]
    return grid.permute(order).reshape(*lead, sx * sy * sz, block[0] * block[1] * block[2])


class SubPatchMLP(nn.Module):
    """``mlp`` patch embedding: shared MLP over sub-blocks, max- and mean-pooled, projected to ``embed_dim``.

    Args:
        patch: ``(px, py, pz)`` voxels per patch.
        block: ``(bx, by, bz)`` voxels per sub-block (must divide ``patch``).
        hidden: width of the sub-block MLP.
        embed_dim: token width.
        channels: modalities read per sub-block (1: ``mlp``; the number of modalities: ``mlp_joint``).
    """

    def __init__(
        self, patch: Sequence[int], block: Sequence[int], hidden: int, embed_dim: int, channels: int = 1
    ) -> None:
        super().__init__()
        sub_block_grid(patch, block)  # validates
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels!r}")
        self.patch, self.block, self.channels = tuple(patch), tuple(block), channels
        voxels = block[0] * block[1] * block[2]
        self.fc1 = nn.Linear(channels * voxels, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.GELU()
        self.proj = nn.Linear(2 * hidden, embed_dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(..., P)`` patch voxels, or ``(..., C, P)`` with ``channels = C > 1``, -> ``(..., embed_dim)`` tokens."""
        blocks = split_sub_blocks(patches, self.patch, self.block)  # (..., S, Q) or (..., C, S, Q)
        if self.channels > 1:
            if patches.ndim < 2 or patches.shape[-2] != self.channels:
                raise ValueError(f"expected (..., {self.channels}, P) patches, got {tuple(patches.shape)}")
            blocks = blocks.movedim(-3, -2).flatten(-2)  # (..., S, C * Q): every channel of a sub-block together
        features = self.act(self.fc2(self.act(self.fc1(blocks))))  # (..., S, H)
        return self.proj(torch.cat([features.amax(dim=-2), features.mean(dim=-2)], dim=-1))


def patch_embedding(
    kind: str, patch: Sequence[int], embed_dim: int, block: Sequence[int], hidden: int, modalities: int = 1
) -> nn.Module:
    """One modality's patch embedding of ``kind`` (see :data:`PATCH_EMBEDS`); ``mlp_joint`` reads ``modalities``."""
    if kind == "linear":
        return nn.Linear(patch[0] * patch[1] * patch[2], embed_dim)
    if kind == "mlp":
        return SubPatchMLP(patch, block, hidden, embed_dim)
    if kind == "mlp_joint":
        return SubPatchMLP(patch, block, hidden, embed_dim, channels=modalities)
    raise ValueError(f"patch embedding must be one of {PATCH_EMBEDS}, got {kind!r}")
