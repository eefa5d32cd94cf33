"""Build the models of a run from :class:`~endofed.config.ModelConfig`, and move encoder weights between them.

Stochastic depth (``ModelConfig.drop_path``) is a fine-tuning regulariser: the classifier's encoder uses it,
the MAE's encoder does not (MAE pre-trains without it). It has no parameters, so the encoder state-dict keys
are identical either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from endofed.config import ModelConfig
from endofed.models.classifier import Classifier3D
from endofed.models.mae import MaskedAutoencoder3D
from endofed.models.vit3d import ViT3D

NUM_MODALITIES = 2  # channel 0 = T1, channel 1 = T2


def build_encoder(
    cfg: ModelConfig, roi_size: Sequence[int], drop_path: float = 0.0, generator: torch.Generator | None = None
) -> ViT3D:
    """A fresh ViT3D for ``roi_size`` volumes.

    Args:
        cfg: model config (patch size, widths, depths).
        roi_size: ``(X, Y, Z)`` input size (``DataConfig.roi_size``); must be divisible by ``cfg.patch_size``.
        drop_path: stochastic-depth rate of the last block.
        generator: random source for the initial weights.

    Returns:
        The encoder.
    """
    return ViT3D(
        roi_size,
        cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        drop_path=drop_path,
        num_modalities=NUM_MODALITIES,
        generator=generator,
    )


def build_mae(
    cfg: ModelConfig, roi_size: Sequence[int], generator: torch.Generator | None = None
) -> MaskedAutoencoder3D:
    """The pre-training model: encoder (no stochastic depth) + narrow decoder.

    Args:
        cfg: model config.
        roi_size: ``(X, Y, Z)`` input size.
        generator: random source for the initial weights.

    Returns:
        The masked autoencoder.
    """
    encoder = build_encoder(cfg, roi_size, drop_path=0.0, generator=generator)
    return MaskedAutoencoder3D(
        encoder,
        decoder_dim=cfg.decoder_dim,
        decoder_depth=cfg.decoder_depth,
        decoder_heads=cfg.decoder_heads,
        mlp_ratio=cfg.mlp_ratio,
        generator=generator,
    )


def build_classifier(
    cfg: ModelConfig, roi_size: Sequence[int], generator: torch.Generator | None = None
) -> Classifier3D:
    """The fine-tuning model: encoder (with ``cfg.drop_path``) + pooled linear head of ``cfg.num_classes``.

    Args:
        cfg: model config.
        roi_size: ``(X, Y, Z)`` input size.
        generator: random source for the initial weights.

    Returns:
        The classifier (from scratch; use :func:`load_encoder` to start from pre-trained weights).
    """
    encoder = build_encoder(cfg, roi_size, drop_path=cfg.drop_path, generator=generator)
    return Classifier3D(encoder, cfg.num_classes, generator=generator)


def load_encoder(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load encoder weights into ``model.encoder`` by name, ``strict=True``.

    Args:
        model: any endofed model (it must have an ``encoder`` ViT3D).
        state_dict: encoder keys without prefix, e.g. ``other_model.encoder.state_dict()``.

    Raises:
        TypeError: if ``model`` has no ViT3D ``encoder``.
        RuntimeError: from ``load_state_dict`` on missing, unexpected or mis-shaped keys.
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, ViT3D):
        raise TypeError(f"model must have a ViT3D .encoder, got {type(model).__name__} with {type(encoder).__name__}")
    encoder.load_state_dict(state_dict, strict=True)
