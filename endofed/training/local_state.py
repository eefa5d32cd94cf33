"""What a federated site keeps of a round besides the global encoder: its own weights and their optimiser state.

A round's ``state.safetensors`` holds ``local.*`` (decoder or head, and any encoder entry the key policy keeps
local) and ``optim.*`` (their optimiser tensors); the model of the next round is the received encoder plus these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from endofed.federated.arrays import to_numpy
from endofed.federated.weights import ENCODER_PREFIX

LOCAL, OPTIM = "local.", "optim."  # key prefixes in the site-local state file: own weights, optimiser state


@dataclass(frozen=True)
class LocalState:
    """What a site saved after a round of a phase (``federation/<run key>/<name>/round-NNNN/state.safetensors``).

    Attributes:
        weights: the model's entries that are not shared (decoder or head; keys without prefix).
        optimizer: the optimiser's tensors of those entries only (``FederatedSite._save``).
        optimizer_meta: the optimiser's parameter groups (JSON).
    """

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    optimizer_meta: dict[str, Any]


def local_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> LocalState:
    """Split a site-local state file into weights (``local.*``) and optimiser state (``optim.*``).

    Raises:
        ValueError: on a key with neither prefix, or metadata without the optimiser's parameter groups.
    """
    stray = sorted(k for k in tensors if not k.startswith((LOCAL, OPTIM)))
    if stray or not isinstance(meta.get("optimizer"), dict):
        raise ValueError(f"not a site-local state file: keys {stray[:3]}, optimizer metadata {meta.get('optimizer')!r}")
    return LocalState(
        weights={k.removeprefix(LOCAL): v for k, v in tensors.items() if k.startswith(LOCAL)},
        optimizer={k.removeprefix(OPTIM): v for k, v in tensors.items() if k.startswith(OPTIM)},
        optimizer_meta=dict(meta["optimizer"]),
    )


def _copied_tensor(value: Any) -> torch.Tensor:
    """A CPU tensor copy of a received array (the model trains it in place; the caller's array stays as sent)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    return torch.tensor(to_numpy(value))  # copies, read-only record buffers included


def full_state(shared: Mapping[str, Any], local: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model's full state dict: the received encoder entries (``encoder.`` prefixed) plus the site's own.

    Args:
        shared: encoder entries sent by the server (numpy arrays or tensors, keys without prefix).
        local: the site's saved entries (decoder or head, and any encoder entry the key policy keeps local).

    Returns:
        ``{key: tensor}`` for :func:`endofed.models.factory.from_state`, which checks it fits the model exactly.

    Raises:
        ValueError: if a key is both received and saved locally (the saved state belongs to another policy).
    """
    received = {f"{ENCODER_PREFIX}{k}": _copied_tensor(v) for k, v in shared.items()}
    both = sorted(set(received) & set(local))
    if both:
        raise ValueError(f"saved local state also holds shared entries {both[:3]}: it belongs to another key policy")
    return {**received, **local}
