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
    """

    def __init__(self, patch: Sequence[int], block: Sequence[int], hidden: int, embed_dim: int) -> None:
        super().__init__()
        sub_block_grid(patch, block)  # validates
        self.patch, self.block = tuple(patch), tuple(block)
        voxels = block[0] * block[1] * block[2]
        self.fc1 = nn.Linear(voxels, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.GELU()
        self.proj = nn.Linear(2 * hidden, embed_dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(..., P)`` patch voxels -> ``(..., embed_dim)`` tokens."""
        blocks = split_sub_blocks(patches, self.patch, self.block)  # (..., S, Q)
        features = self.act(self.fc2(self.act(self.fc1(blocks))))  # (..., S, H)
        return self.proj(torch.cat([features.amax(dim=-2), features.mean(dim=-2)], dim=-1))


def patch_embedding(kind: str, patch: Sequence[int], embed_dim: int, block: Sequence[int], hidden: int) -> nn.Module:
    """One modality's patch embedding of ``kind`` (see :data:`PATCH_EMBEDS`)."""
    if kind == "linear":
        return nn.Linear(patch[0] * patch[1] * patch[2], embed_dim)
    if kind == "mlp":
        return SubPatchMLP(patch, block, hidden, embed_dim)
    raise ValueError(f"patch embedding must be one of {PATCH_EMBEDS}, got {kind!r}")
