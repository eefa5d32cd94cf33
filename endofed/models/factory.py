"""Build the models of a run from :class:`~endofed.config.ModelConfig`, and move encoder weights between them.

Stochastic depth (``ModelConfig.drop_path``) is a fine-tuning regulariser: the classifier's encoder uses it,
the MAE's encoder does not (MAE pre-trains without it). It has no parameters, so the encoder state-dict keys
are identical either way.

Every builder takes either a ``generator`` (fresh, seeded random weights) or a ``state`` (the model's full state
dict). With a ``state`` the model is built on the meta device, so no memory is filled with random numbers that
would be overwritten at once, and then takes the given tensors as its weights (``load_state_dict(assign=True)``,
strict). A federated site uses it for every round after the first: the encoder comes from the server and the
rest from the site's saved local state, so a ViT-B model costs no random initialisation at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

from endofed.config import ModelConfig
from endofed.models.classifier import Classifier3D
from endofed.models.mae import MaskedAutoencoder3D
from endofed.models.vit3d import ViT3D

NUM_MODALITIES = 2  # channel 0 = T1, channel 1 = T2
ModelT = TypeVar("ModelT", bound=nn.Module)


def _check_source(generator: torch.Generator | None, state: Mapping[str, torch.Tensor] | None) -> None:
    """A model's weights come from a random source or from a state dict, not from both."""
    if generator is not None and state is not None:
        raise ValueError("pass either generator (random initial weights) or state (given weights), not both")


def from_state(build: Callable[[], ModelT], state: Mapping[str, torch.Tensor]) -> ModelT:
    """Build a model on the meta device (no storage, no random init), then give it exactly the tensors of ``state``.

    Args:
        build: makes the model (called inside a ``torch.device("meta")`` context).
        state: the model's full state dict (every key, no other); tensors are cast to the model's dtypes and then
            used as the model's weights without a copy (the caller hands them over).

    Returns:
        The model, on the device of ``state``'s tensors.

    Raises:
        ValueError: naming the missing/unexpected keys or a mis-shaped tensor.
    """
    with torch.device("meta"):
        model = build()
    expected = model.state_dict()
    tensors = {k: v.to(expected[k].dtype) if k in expected else v for k, v in state.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise ValueError(f"state does not fit {type(model).__name__}: {detail}") from None
    empty = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    assert not empty, f"no weights for {empty[:3]}"  # non-persistent buffers are computed on the CPU
    return model


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
        patch_embed=cfg.patch_embed,
        stem_block=cfg.stem_block,
        stem_dim=cfg.stem_dim,
    )


def build_mae(
    cfg: ModelConfig,
    roi_size: Sequence[int],
    generator: torch.Generator | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> MaskedAutoencoder3D:
    """The pre-training model: encoder (no stochastic depth) + narrow decoder.

    Args:
        cfg: model config.
        roi_size: ``(X, Y, Z)`` input size.
        generator: random source for the initial weights.
        state: the model's full state dict instead of random weights (see :func:`from_state`).

    Returns:
        The masked autoencoder.

    Raises:
        ValueError: if both ``generator`` and ``state`` are given, or ``state`` does not fit.
    """
    _check_source(generator, state)
    if state is not None:
        return from_state(lambda: build_mae(cfg, roi_size), state)
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
    cfg: ModelConfig,
    roi_size: Sequence[int],
    generator: torch.Generator | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Classifier3D:
    """The fine-tuning model: encoder (with ``cfg.drop_path``) + pooled linear head of ``cfg.num_classes``.

    Args:
        cfg: model config.
        roi_size: ``(X, Y, Z)`` input size.
        generator: random source for the initial weights.
        state: the model's full state dict instead of random weights (see :func:`from_state`).

    Returns:
        The classifier (from scratch; use :func:`load_encoder` to start from pre-trained weights).

    Raises:
        ValueError: if both ``generator`` and ``state`` are given, or ``state`` does not fit.
    """
    _check_source(generator, state)
    if state is not None:
        return from_state(lambda: build_classifier(cfg, roi_size), state)
    encoder = build_encoder(cfg, roi_size, drop_path=cfg.drop_path, generator=generator)
    return Classifier3D(encoder, cfg.num_classes, generator=generator, pooling=cfg.pooling)


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
