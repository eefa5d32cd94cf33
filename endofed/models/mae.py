"""Masked autoencoder around a :class:`~endofed.models.vit3d.ViT3D`: the encoder sees only visible tokens.

The narrow decoder (stays at the site, never federated) embeds the encoded visible tokens to its own width,
puts a learned mask token at every hidden position, adds its own fixed sin-cos positions (non-persistent
buffer ``decoder_pos_embed``) plus a learned decoder modality embedding (so each token knows *which* modality
to reconstruct), runs pre-norm blocks and predicts the ``P`` voxels of every token, in normalised-patch units
(see :mod:`endofed.ssl.loss`). ``forward`` returns the prediction only; the loss is a separate function.
"""

from __future__ import annotations

import torch
from torch import nn

from endofed.models.blocks import LAYER_NORM_EPS, Block, init_normal, init_weights, sincos_position_embedding_3d
from endofed.models.patches import visible_indices
from endofed.models.vit3d import ViT3D


class MaskedAutoencoder3D(nn.Module):
    """MAE for multi-modal 3D volumes.

    Args:
        encoder: the ViT3D to pre-train (stored as ``self.encoder``; its keys are those of every model).
        decoder_dim: decoder width ``D``.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads (must divide ``decoder_dim``).
        mlp_ratio: decoder MLP hidden width / ``decoder_dim``.
        generator: random source for the decoder's initial weights (``None`` = global RNG).

    Example::

        mae = MaskedAutoencoder3D(ViT3D((64, 64, 16), (16, 16, 4), 96, 4, 3), decoder_dim=64)
        mask = make_mask("independent", 2, 2, mae.encoder.tokens_per_modality, 0.75, torch.Generator())
        pred = mae(torch.zeros(2, 2, 64, 64, 16), mask)  # (2, 128, 1024)
    """

    decoder_pos_embed: torch.Tensor

    def __init__(
        self,
        encoder: ViT3D,
        decoder_dim: int = 384,
        decoder_depth: int = 4,
        decoder_heads: int = 12,
        mlp_ratio: float = 4.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if decoder_dim < 6 or decoder_dim % decoder_heads or decoder_depth < 1:
            raise ValueError(
                f"decoder_dim ({decoder_dim}) must be >= 6 and divisible by decoder_heads ({decoder_heads}), "
                f"and decoder_depth ({decoder_depth}) >= 1"
            )
        self.encoder = encoder
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_modality_embed = nn.Parameter(torch.zeros(encoder.num_modalities, decoder_dim))
        pos = sincos_position_embedding_3d(encoder.grid, decoder_dim)
        self.register_buffer("decoder_pos_embed", pos, persistent=False)
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_heads, mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(decoder_dim, encoder.patch_voxels)

        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            init_weights(module, generator)
        init_normal(self.mask_token, std=0.02, generator=generator)
        init_normal(self.decoder_modality_embed, std=0.02, generator=generator)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, num_visible: int | None = None) -> torch.Tensor:
        """Encode the visible tokens and predict every token.

        Args:
            x: ``(B, M, X, Y, Z)`` volumes.
            mask: ``(B, N)`` bool, True = hidden (from :func:`endofed.ssl.masking.make_mask`); every row must
                hide the same number of tokens.
            num_visible: visible tokens per row, if known (:func:`endofed.ssl.masking.num_visible`); passing
                it avoids a device-to-host synchronisation.

        Returns:
            ``(B, N, P)`` predicted voxels per token (normalised-patch units); only hidden tokens are trained.

        Raises:
            ValueError: if ``mask`` does not match the encoder's ``N`` tokens.
        """
        if mask.shape != (x.shape[0], self.encoder.num_tokens):
            raise ValueError(f"mask must be (B, {self.encoder.num_tokens}) = (B, N), got {tuple(mask.shape)}")
        keep_idx = visible_indices(mask, num_visible)  # (B, n)
        latent = self.encoder(x, keep_idx)  # (B, n, E)
        return self.forward_decoder(latent, keep_idx)

    def forward_decoder(self, latent: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Put encoded visible tokens back in place, fill the rest with the mask token and decode.

        Args:
            latent: ``(B, n, E)`` encoder output for the visible tokens.
            keep_idx: ``(B, n)`` int64 positions of those tokens in the full sequence.

        Returns:
            ``(B, N, P)`` predictions.
        """
        visible = self.decoder_embed(latent)  # (B, n, D)
        b, _, d = visible.shape
        full = self.mask_token.to(visible.dtype).expand(b, self.encoder.num_tokens, d)
        full = full.scatter(1, keep_idx.unsqueeze(-1).expand(-1, -1, d), visible)  # (B, N, D)
        position = self.decoder_pos_embed.unsqueeze(0) + self.decoder_modality_embed.unsqueeze(1)  # (M, L, D)
        tokens = full + position.flatten(0, 1)
        for block in self.decoder_blocks:
            tokens = block(tokens)
        return self.decoder_pred(self.decoder_norm(tokens))
