"""Optimiser state as plain tensors + JSON, so it can be saved with safetensors (never pickled).

``torch.optim.Optimizer.state_dict()`` is a nested dict of tensors and Python numbers; this flattens its
per-parameter tensors to ``state.<index>.<name>`` keys and keeps ``param_groups`` as JSON metadata.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch

_PREFIX = "state."


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, params: Collection[torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimiser's state: ``(tensors, {"param_groups": [...]})``.

    Args:
        optimizer: the optimiser.
        params: keep the state of these parameters only (``None``: of all). The others restore with no state,
            as if never stepped (:func:`restore_optimizer`); the parameter groups are always kept whole.
    """
    state = optimizer.state_dict()
    kept = None if params is None else {id(p) for p in params}
    ordered = [p for group in optimizer.param_groups for p in group["params"]]  # state_dict()'s index order
    tensors: dict[str, torch.Tensor] = {}
    for index, entries in state["state"].items():
        if kept is not None and id(ordered[index]) not in kept:
            continue
        for name, value in entries.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{_PREFIX}{index}.{name}"] = tensor.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Load state flattened by :func:`optimizer_tensors` into an optimiser over the same parameters.

    Raises:
        ValueError: the saved state does not fit this optimiser (different parameter groups).
    """
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise ValueError("saved optimiser state has a different number of parameter groups")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith(_PREFIX):
            raise ValueError(f"unexpected optimiser state key {key!r}")
        index, name = key[len(_PREFIX) :].split(".", 1)
        state.setdefault(int(index), {})[name] = value
    restored = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": restored})
