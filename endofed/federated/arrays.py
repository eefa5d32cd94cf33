"""Small shared helpers: state dicts of numpy arrays or torch tensors, key-set diffs for error messages.

:func:`per_entry` runs one function over a state's entries on a few threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeAlias, TypeVar

import numpy as np
import torch

ArrayLike: TypeAlias = np.ndarray | torch.Tensor
StateLike: TypeAlias = Mapping[str, ArrayLike]

_MAX_NAMED_KEYS = 5
ENTRY_THREADS = 8  # at most this many threads run per_entry (bounded by the CPUs this process may use)
K = TypeVar("K")
R = TypeVar("R")


def per_entry(function: Callable[[K], R], keys: Iterable[K]) -> list[R]:
    """``[function(key) for key in keys]``, on up to :data:`ENTRY_THREADS` threads, results in the keys' order.

    For numpy and hashlib work on large arrays, which runs without the GIL: an encoder's 300 entries are
    decoded, hashed or checked on every core the process may use. ``function`` must not depend on the others'
    results; the first exception raised (in key order) is raised here.
    """
    items = list(keys)
    workers = max(1, min(ENTRY_THREADS, len(os.sched_getaffinity(0)), len(items)))
    if workers == 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


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
