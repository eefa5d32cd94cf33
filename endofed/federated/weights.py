"""The key policy: which state-dict entries of a model are federated, and moving them in and out of a model.

Only the encoder leaves a site. The shared keys are those of ``model.encoder.state_dict()`` (no
``encoder.`` prefix), restricted to floating-point entries (parameters and float buffers; integer counters
stay local). The MAE decoder, the classification head and the optimiser state are never shared. The
sin-cos position embedding is a non-persistent buffer, so it is not in the state dict at all.

Policies:

* ``"encoder"``: every floating-point encoder entry (FedAvg / FedProx / FedAdam default).
* ``"encoder_no_norm"``: the same without LayerNorm weights and biases, which stay at the site
  (FedBN-like: per-site feature statistics for scanners with different contrast).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from endofed.config import ModelConfig
from endofed.federated.arrays import ArrayLike, StateLike, key_mismatch, to_tensor
from endofed.models.factory import build_encoder
from endofed.models.vit3d import ViT3D

POLICIES = ("encoder", "encoder_no_norm")
ENCODER_PREFIX = "encoder."
# LayerNorm entries of a ViT3D state dict by name (``norm.*``, ``blocks.<i>.norm1.*``, ``blocks.<i>.norm2.*``).
NORM_KEY = re.compile(r"(?:^|\.)norm\d*\.(?:weight|bias)$")


def check_policy(policy: str) -> None:
    """Raise ``ValueError`` unless ``policy`` is one of :data:`POLICIES`."""
    if policy not in POLICIES:
        raise ValueError(f"key policy must be one of {POLICIES}, got {policy!r}")


def encoder_of(model: nn.Module) -> nn.Module:
    """The federated submodule: ``model.encoder``, or ``model`` itself if it is a :class:`ViT3D`.

    Raises:
        TypeError: if ``model`` has no ``encoder`` submodule and is not an encoder.
    """
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        return encoder
    if isinstance(model, ViT3D):
        return model
    raise TypeError(f"expected a model with an .encoder submodule (or a ViT3D), got {type(model).__name__}")


def _is_floating(value: ArrayLike) -> bool:
    """Whether an array or tensor holds floating-point values."""
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    return bool(value.dtype.kind == "f")


def _layer_norm_keys(encoder: nn.Module) -> set[str]:
    """State-dict keys of every LayerNorm parameter inside ``encoder`` (found by module type)."""
    keys = set()
    for name, module in encoder.named_modules():
        if isinstance(module, nn.LayerNorm):
            for param_name, _ in module.named_parameters(recurse=False):
                keys.add(f"{name}.{param_name}" if name else param_name)
    return keys


def _encoder_entries(state: StateLike) -> dict[str, ArrayLike]:
    """The encoder part of a state dict: ``encoder.*`` entries with the prefix stripped.

    A state dict with no ``encoder.*`` key is taken to be an encoder state dict already.
    """
    if any(key.startswith(ENCODER_PREFIX) for key in state):
        return {key[len(ENCODER_PREFIX) :]: value for key, value in state.items() if key.startswith(ENCODER_PREFIX)}
    return dict(state)


def shared_keys(model_or_state: nn.Module | StateLike, policy: str = "encoder") -> tuple[str, ...]:
    """The state-dict keys that are federated under ``policy``, in state-dict order.

    Args:
        model_or_state: a model with an ``encoder`` (or the encoder itself), or a state dict: either a full
            model state dict (``encoder.*`` keys are used, prefix stripped) or an encoder state dict.
        policy: one of :data:`POLICIES`.

    Returns:
        Encoder keys without prefix, e.g. ``("modality_embed", "patch_embed.0.weight", ...)``. With a model,
        LayerNorm entries are found by module type; with a state dict, by name (:data:`NORM_KEY`).

    Raises:
        ValueError: on an unknown policy.
        TypeError: if a model has no encoder.
    """
    check_policy(policy)
    if isinstance(model_or_state, nn.Module):
        encoder = encoder_of(model_or_state)
        entries: Mapping[str, ArrayLike] = encoder.state_dict()
        norm_keys = _layer_norm_keys(encoder)
    else:
        entries = _encoder_entries(model_or_state)
        norm_keys = {key for key in entries if NORM_KEY.search(key)}
    local = norm_keys if policy == "encoder_no_norm" else set()
    return tuple(key for key, value in entries.items() if _is_floating(value) and key not in local)


def shared_shapes(model: ModelConfig, roi_size: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The federated encoder's keys and shapes for a model config (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        encoder = build_encoder(model, roi_size)
    live = encoder.state_dict()
    return {key: tuple(live[key].shape) for key in shared_keys(encoder)}


def encoder_state(model: nn.Module, policy: str = "encoder") -> dict[str, torch.Tensor]:
    """The shared entries of ``model.encoder`` as fresh fp32 CPU tensors (never aliases of the live weights).

    Args:
        model: a model with an ``encoder`` (or the encoder itself).
        policy: one of :data:`POLICIES`.

    Returns:
        ``{key: tensor}`` for :func:`shared_keys`, each detached, float32, on the CPU, contiguous and copied.
    """
    live = encoder_of(model).state_dict()
    return {
        key: live[key].detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
        for key in shared_keys(model, policy)
    }


def load_shared(model: nn.Module, state: StateLike, policy: str = "encoder") -> None:
    """Load federated weights into ``model.encoder``; the local (unshared) entries are left untouched.

    Args:
        model: a model with an ``encoder`` (or the encoder itself).
        state: exactly the keys of ``shared_keys(model, policy)``, numpy arrays or tensors of the same shapes
            (values are cast to the parameters' dtype and device).
        policy: one of :data:`POLICIES`.

    Raises:
        ValueError: naming the missing/unexpected keys, or a key whose shape differs.
    """
    encoder = encoder_of(model)
    expected = shared_keys(model, policy)
    mismatch = key_mismatch(expected, state.keys())
    if mismatch:
        raise ValueError(f"shared state does not match the {policy!r} key policy: {mismatch}")
    live = encoder.state_dict()
    tensors = {}
    for key in expected:
        tensor = to_tensor(state[key])
        if tuple(tensor.shape) != tuple(live[key].shape):
            raise ValueError(f"shared state {key!r} has shape {tuple(tensor.shape)}, expected {tuple(live[key].shape)}")
        tensors[key] = tensor
    result = encoder.load_state_dict(tensors, strict=False)
    # The key sets were checked above: exactly the local entries may be missing, nothing may be unexpected.
    assert set(result.missing_keys) == set(live) - set(expected), result.missing_keys
    assert not result.unexpected_keys, result.unexpected_keys
