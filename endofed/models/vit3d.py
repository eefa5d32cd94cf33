"""ViT3D: the multi-modal 3D vision-transformer encoder, the only part of a model that is federated.

Tokens: every modality (channel 0 = T1, 1 = T2) is cut into ``L = gx * gy * gz`` patches and embedded by its
own patch embedding (``patch_embed.<m>``: a linear layer, or the sub-block MLP of :mod:`endofed.models.stem`;
``mlp_joint``: that MLP reading every modality's patch at the token's location), then the modality-major
sequence of ``N = M * L`` tokens gets a fixed sin-cos position embedding (same for every modality) plus a
learned per-modality embedding. Token order is that of :mod:`endofed.models.patches`.

MAE's trick is two calls: :meth:`ViT3D.embed` embeds all tokens, the caller keeps the visible ones
(:func:`gather_tokens`), and :meth:`ViT3D.forward_tokens` runs the transformer on those alone.
:meth:`ViT3D.forward` does all three.

The position embedding is a **non-persistent buffer** (``pos_embed``): it follows ``.to(device)`` but is not a
parameter (never in the optimiser) and not in ``state_dict()``, so the federated weights are real weights only
and the state-dict keys do not depend on the ROI. State-dict keys (stable, tested)::

    patch_embed.<m>.{weight,bias}  modality_embed  blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*
    (with the ``mlp`` patch embedding: patch_embed.<m>.{fc1,fc2,proj}.{weight,bias})
    norm.{weight,bias}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from endofed.models.blocks import LAYER_NORM_EPS, Block, init_normal, init_weights, sincos_position_embedding_3d
from endofed.models.patches import grid_size, patchify
from endofed.models.stem import patch_embedding


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample (an index op: works under autocast and on any device).

    Args:
        tokens: ``(B, N, E)``.
        index: ``(B, n)`` int64 token indices.

    Returns:
        ``(B, n, E)`` with ``out[b, i] = tokens[b, index[b, i]]``.
    """
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class ViT3D(nn.Module):
    """Multi-modal 3D ViT encoder with per-modality patch embeddings and no class token.

    Args:
        roi_size: ``(X, Y, Z)`` input size in voxels; must be divisible by ``patch_size``.
        patch_size: ``(px, py, pz)`` voxels per token, anisotropic allowed (e.g. 16 x 16 x 4).
        embed_dim: token width ``E``.
        depth: number of transformer blocks.
        num_heads: attention heads (must divide ``embed_dim``).
        mlp_ratio: MLP hidden width / ``embed_dim``.
        drop_path: stochastic-depth rate of the last block (linearly increasing from 0 over the blocks).
        num_modalities: input channels ``M``, each with its own patch embedding.
        generator: random source for the initial weights (``None`` = global RNG).
        patch_embed: ``linear`` (ViT's), ``mlp`` (patch-local sub-block MLP, :mod:`endofed.models.stem`) or
            ``mlp_joint`` (the same MLP over every modality's voxels at the token's location).
        stem_block: sub-block size of the ``mlp`` embedding (must divide ``patch_size``).
        stem_dim: hidden width of the ``mlp`` embedding.

    Example::

        enc = ViT3D((64, 64, 16), (16, 16, 4), embed_dim=96, depth=4, num_heads=3)
        tokens = enc(torch.zeros(2, 2, 64, 64, 16))  # (2, 128, 96)
    """

    pos_embed: torch.Tensor

    def __init__(
        self,
        roi_size: Sequence[int],
        patch_size: Sequence[int],
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        num_modalities: int = 2,
        generator: torch.Generator | None = None,
        patch_embed: str = "linear",
        stem_block: Sequence[int] = (4, 4, 2),
        stem_dim: int = 64,
    ) -> None:
        super().__init__()
        self.grid = grid_size(roi_size, patch_size)  # validates divisibility
        if embed_dim < 6 or embed_dim % num_heads:
            raise ValueError(f"embed_dim must be >= 6 and divisible by num_heads {num_heads}, got {embed_dim!r}")
        if depth < 1 or num_modalities < 1:
            raise ValueError(f"depth and num_modalities must be >= 1, got {depth!r} and {num_modalities!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path!r}")
        self.roi_size = tuple(int(s) for s in roi_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.embed_dim = embed_dim
        self.num_modalities = num_modalities
        self.tokens_per_modality = self.grid[0] * self.grid[1] * self.grid[2]
        self.num_tokens = num_modalities * self.tokens_per_modality
        self.patch_voxels = self.patch_size[0] * self.patch_size[1] * self.patch_size[2]

        self.patch_embed = nn.ModuleList(
            patch_embedding(patch_embed, self.patch_size, embed_dim, stem_block, stem_dim, num_modalities)
            for _ in range(num_modalities)
        )
        self.joint_embed = patch_embed == "mlp_joint"  # each token's embedding reads every modality there
        self.modality_embed = nn.Parameter(torch.zeros(num_modalities, embed_dim))
        self.register_buffer("pos_embed", sincos_position_embedding_3d(self.grid, embed_dim), persistent=False)
        rates = torch.linspace(0.0, drop_path, depth, device="cpu").tolist()  # real numbers also under meta
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, rate) for rate in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)

        init_weights(self, generator)
        init_normal(self.modality_embed, std=0.02, generator=generator)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embed every token of a batch of volumes.

        Args:
            x: ``(B, M, X, Y, Z)`` volumes at ``roi_size``.

        Returns:
            ``(B, N, E)`` tokens, ``N = M * L`` in modality-major order, with position and modality embeddings.

        Raises:
            ValueError: if ``x`` does not have shape ``(B, M, *roi_size)``.
        """
        if x.ndim != 5 or tuple(x.shape[1:]) != (self.num_modalities, *self.roi_size):
            raise ValueError(
                f"expected input (B, {self.num_modalities}, {', '.join(map(str, self.roi_size))}), got {tuple(x.shape)}"
            )
        return self.embed_patches(patchify(x, self.patch_size))

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Embed already patchified voxels.

        Args:
            patches: ``(B, N, P)`` from :func:`endofed.models.patches.patchify`.

        Returns:
            ``(B, N, E)`` tokens with position and modality embeddings.
        """
        b = patches.shape[0]
        per_modality = patches.view(b, self.num_modalities, self.tokens_per_modality, self.patch_voxels)
        if self.joint_embed:
            located = per_modality.transpose(1, 2)  # (B, L, M, P): every modality's patch at each location
            embedded = torch.stack([embed(located) for embed in self.patch_embed], dim=1)  # (B, M, L, E)
        else:
            embedded = torch.stack(
                [embed(per_modality[:, m]) for m, embed in enumerate(self.patch_embed)], dim=1
            )  # (B, M, L, E)
        position = self.pos_embed.unsqueeze(0) + self.modality_embed.unsqueeze(1)  # (M, L, E)
        return (embedded + position).flatten(1, 2)

    def forward_tokens(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the transformer blocks and the final norm on any subset of embedded tokens.

        Args:
            tokens: ``(B, n, E)`` embedded tokens (all ``N`` or only the visible ones).
            key_mask: optional ``(B, n)`` bool, False for tokens that must not be attended to (e.g. a missing
                modality). ``None`` keeps the fastest (flash) attention kernels available.

        Returns:
            ``(B, n, E)`` encoded tokens.
        """
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, n)
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        return self.norm(tokens)

    def forward(
        self, x: torch.Tensor, keep_idx: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode volumes, optionally only the tokens in ``keep_idx``.

        Args:
            x: ``(B, M, X, Y, Z)`` volumes.
            keep_idx: optional ``(B, n)`` int64 indices of the tokens to encode (MAE: the visible ones).
            key_mask: optional ``(B, n)`` bool attention key mask (see :meth:`forward_tokens`).

        Returns:
            ``(B, n, E)`` encoded tokens (``n = N`` without ``keep_idx``).
        """
        tokens = self.embed(x)  # (B, N, E)
        if keep_idx is not None:
            tokens = gather_tokens(tokens, keep_idx)  # (B, n, E)
        return self.forward_tokens(tokens, key_mask)
