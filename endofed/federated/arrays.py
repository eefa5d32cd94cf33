"""Small shared helpers: state dicts of numpy arrays or torch tensors, and key-set diffs for error messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeAlias

import numpy as np
import torch

ArrayLike: TypeAlias = np.ndarray | torch.Tensor
StateLike: TypeAlias = Mapping[str, ArrayLike]

_MAX_NAMED_KEYS = 5


def to_numpy(value: ArrayLike) -> np.ndarray:
    """A numpy view (or copy) of one array; bfloat16 tensors become float32 (numpy has no bfloat16).

    Args:
        value: a numpy array or a torch tensor on any device.

    Returns:
        The values as a numpy array.

    Raises:
        TypeError: if ``value`` is neither a numpy array nor a torch tensor.
    """
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    raise TypeError(f"expected a numpy array or torch tensor, got {type(value).__name__}")


def to_tensor(value: ArrayLike) -> torch.Tensor:
    """A torch tensor of one array; numpy input is copied (record buffers may be read-only).

    Raises:
        TypeError: if ``value`` is neither a numpy array nor a torch tensor.
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    raise TypeError(f"expected a numpy array or torch tensor, got {type(value).__name__}")


def state_to_numpy(state: StateLike) -> dict[str, np.ndarray]:
    """:func:`to_numpy` applied to every entry of a state dict (order kept)."""
    return {key: to_numpy(value) for key, value in state.items()}


def _named(keys: Iterable[str]) -> str:
    """``['a', 'b', ...]`` with at most a few names and a count of the rest."""
    items = sorted(keys)
    shown = ", ".join(repr(k) for k in items[:_MAX_NAMED_KEYS])
    more = f" (+{len(items) - _MAX_NAMED_KEYS} more)" if len(items) > _MAX_NAMED_KEYS else ""
    return f"[{shown}]{more}"


def key_mismatch(expected: Iterable[str], actual: Iterable[str]) -> str | None:
    """Describe how a key set differs from the expected one, or ``None`` if they are equal.

    Args:
        expected: the keys that must be present.
        actual: the keys that are present.

    Returns:
        E.g. ``"missing ['norm.bias'], unexpected ['head.weight']"``, or ``None``.
    """
    expected_set, actual_set = set(expected), set(actual)
    missing, unexpected = expected_set - actual_set, actual_set - expected_set
    parts = []
    if missing:
        parts.append(f"missing {_named(missing)}")
    if unexpected:
        parts.append(f"unexpected {_named(unexpected)}")
    return ", ".join(parts) or None
