"""Classification model for fine-tuning: the same :class:`~endofed.models.vit3d.ViT3D` plus a small head.

``Classifier3D.encoder`` has the class and attribute name of ``MaskedAutoencoder3D.encoder``, so encoder
weights move between pre-training, federation and fine-tuning by name with ``strict=True``. The head
(tokens pooled by mean or maximum -> LayerNorm -> Linear) stays at the site. Max pooling suits a finding that
may sit in any one token ("is there a lesion anywhere"), which the mean dilutes over all tokens. A case
missing a modality can be classified from the other one: pass ``modality_present`` and that modality's tokens
are neither attended to nor pooled.
"""

from __future__ import annotations

import torch
from torch import nn

from endofed.config import POOLINGS
from endofed.models.blocks import LAYER_NORM_EPS, init_weights
from endofed.models.vit3d import ViT3D


def modality_presence(valid: torch.Tensor) -> torch.Tensor:
    """Which modalities a case has at all.

    Args:
        valid: ``(B, M, X, Y, Z)`` bool voxel validity (the dataset's ``mask``).

    Returns:
        ``(B, M)`` bool, True where the modality has at least one valid voxel.
    """
    if valid.ndim != 5:
        raise ValueError(f"validity mask must be (B, M, X, Y, Z), got shape {tuple(valid.shape)}")
    return valid.flatten(2).any(dim=2)


class Classifier3D(nn.Module):
    """ViT3D encoder -> mean or maximum over tokens -> LayerNorm -> Linear.

    Args:
        encoder: the (pre-trained or fresh) encoder, stored as ``self.encoder``.
        num_classes: number of outputs (>= 2).
        generator: random source for the head's initial weights (``None`` = global RNG).
        pooling: ``mean`` or ``max`` over the (present modalities') tokens, per feature.
    """

    def __init__(
        self, encoder: ViT3D, num_classes: int, generator: torch.Generator | None = None, pooling: str = "mean"
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.encoder = encoder
        self.head_norm = nn.LayerNorm(encoder.embed_dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        init_weights(self.head_norm, generator)
        init_weights(self.head, generator)

    def forward_features(self, x: torch.Tensor, modality_present: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled, normalised features before the linear head.

        Args:
            x: ``(B, M, X, Y, Z)`` volumes.
            modality_present: optional ``(B, M)`` bool (see :func:`modality_presence`); every case needs at
                least one modality. ``None`` = all present (and the fastest attention kernels).

        Returns:
            ``(B, E)`` features.

        Raises:
            ValueError: if ``modality_present`` has the wrong shape or a case has no modality.
        """
        if modality_present is None:
            tokens = self.encoder(x)
            return self.head_norm(tokens.amax(dim=1) if self.pooling == "max" else tokens.mean(dim=1))
        enc = self.encoder
        if modality_present.shape != (x.shape[0], enc.num_modalities) or modality_present.dtype != torch.bool:
            raise ValueError(
                f"modality_present must be a (B, {enc.num_modalities}) bool tensor, got "
                f"{tuple(modality_present.shape)} {modality_present.dtype}"
            )
        if not bool(modality_present.any(dim=1).all()):  # host sync, acceptable in fine-tuning
            raise ValueError(f"every case needs at least one modality, got modality_present={modality_present}")
        present = modality_present.repeat_interleave(enc.tokens_per_modality, dim=1)  # (B, N)
        x = x * modality_present[:, :, None, None, None].to(x.dtype)  # an absent modality is never read (mlp_joint)
        tokens = enc(x, key_mask=present)  # (B, N, E)
        if self.pooling == "max":
            return self.head_norm(tokens.masked_fill(~present.unsqueeze(-1), float("-inf")).amax(dim=1))
        weight = present.unsqueeze(-1).to(tokens.dtype)  # (B, N, 1)
        pooled = (tokens * weight).sum(dim=1) / weight.sum(dim=1)
        return self.head_norm(pooled)

    def forward(self, x: torch.Tensor, modality_present: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits.

        Args:
            x: ``(B, M, X, Y, Z)`` volumes.
            modality_present: optional ``(B, M)`` bool, see :meth:`forward_features`.

        Returns:
            ``(B, num_classes)`` logits.
        """
        return self.head(self.forward_features(x, modality_present))
