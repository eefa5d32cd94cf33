"""Reference aggregation for the tests: weighted average, coordinate-wise trimmed mean, FedAdam step.

The coordinator aggregates with Flower's own strategies (``server/strategies.py`` subclasses FedAvg, FedAdam,
FedTrimmedAvg, ...); these hand-checked functions are what the tests (and ``benchmarks/transport_effect.py``, a
federation without Flower) hold those results against. They are not part of the installed library.

All functions are pure: they take state dicts (numpy arrays or tensors), validate them, compute in float64
and return new numpy dicts in the inputs' floating dtype. Inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from endofed.federated.arrays import StateLike, key_mismatch, state_to_numpy

NumpyState = dict[str, np.ndarray]


def check_states(states: Sequence[StateLike], labels: Sequence[str] | None = None) -> list[NumpyState]:
    """Convert site states to numpy and require identical keys, shapes and float dtypes, and finite values.

    Args:
        states: one state dict per site (at least one).
        labels: names used in error messages (default ``"state <i>"``).

    Returns:
        The states as numpy dicts, in the order given.

    Raises:
        ValueError: naming the state and key that breaks a rule (or a labels/states length mismatch).
    """
    if not states:
        raise ValueError("need at least one state to aggregate, got none")
    names = list(labels) if labels is not None else [f"state {i}" for i in range(len(states))]
    if len(names) != len(states):
        raise ValueError(f"need one label per state: {len(states)} states, {len(names)} labels")
    arrays = [state_to_numpy(state) for state in states]
    reference, first_name = arrays[0], names[0]
    for name, state in zip(names, arrays, strict=True):
        mismatch = key_mismatch(reference.keys(), state.keys())
        if mismatch:
            raise ValueError(f"{name} has different keys from {first_name}: {mismatch}")
        for key, value in state.items():
            first = reference[key]
            if value.shape != first.shape:
                raise ValueError(f"{name} key {key!r} has shape {value.shape}, {first_name} has {first.shape}")
            if value.dtype != first.dtype:
                raise ValueError(f"{name} key {key!r} has dtype {value.dtype}, {first_name} has {first.dtype}")
            if value.dtype.kind != "f":
                raise ValueError(f"{name} key {key!r} has non-float dtype {value.dtype}; only floats are aggregated")
            if not np.isfinite(value).all():
                raise ValueError(f"{name} key {key!r} contains NaN or Inf")
    return arrays


def normalised_weights(weights: Sequence[float], count: int) -> list[float]:
    """Turn per-site weights (numbers of training volumes) into factors that sum to 1.

    Args:
        weights: one non-negative, finite weight per site.
        count: the number of states the weights belong to.

    Returns:
        ``weights / sum(weights)``.

    Raises:
        ValueError: on a length mismatch, a negative or non-finite weight, or a total that is not > 0.
    """
    if len(weights) != count:
        raise ValueError(f"need one weight per state: {count} states, {len(weights)} weights")
    values = [float(w) for w in weights]
    for index, value in enumerate(values):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"weight {index} must be finite and >= 0, got {weights[index]!r}")
    total = sum(values)
    if total <= 0:
        raise ValueError(f"total weight must be > 0, got {total!r} from {list(weights)!r}")
    return [value / total for value in values]


def weighted_average(states: Sequence[StateLike], weights: Sequence[float]) -> NumpyState:
    """FedAvg: the per-key average of site states, weighted by each site's number of training volumes.

    Args:
        states: one state dict per site, identical keys and shapes.
        weights: one weight per site (``num-examples`` = training volumes, not batches).

    Returns:
        ``{key: sum_i w_i * state_i[key] / sum_i w_i}`` in the inputs' dtype. Example: ``[1, 2]`` and
        ``[3, 4]`` with weights 1 and 3 give ``[2.5, 3.5]``.

    Raises:
        ValueError: see :func:`check_states` and :func:`normalised_weights`.
    """
    arrays = check_states(states)
    factors = normalised_weights(weights, len(arrays))
    average: NumpyState = {}
    for key, first in arrays[0].items():
        total = np.zeros(first.shape, dtype=np.float64)
        for factor, state in zip(factors, arrays, strict=True):
            total += factor * state[key].astype(np.float64)
        average[key] = total.astype(first.dtype)
    return average


def trimmed_mean(states: Sequence[StateLike], beta: float) -> NumpyState:
    """Coordinate-wise trimmed mean (unweighted, as Flower's ``FedTrimmedAvg``), robust to a few outliers.

    Args:
        states: one state dict per site, identical keys and shapes.
        beta: fraction cut from *each* end per coordinate, ``0 <= beta < 0.5``; ``floor(beta * n)`` values
            are dropped at each end. Example: values ``[-50, 1, 2, 3, 100]`` with ``beta = 0.2`` give 2.

    Returns:
        ``{key: mean of the kept values}`` in the inputs' dtype.

    Raises:
        ValueError: on a bad ``beta`` or inconsistent states (see :func:`check_states`).
    """
    if not 0 <= beta < 0.5:
        raise ValueError(f"trimmed-mean beta must be in [0, 0.5), got {beta!r}")
    arrays = check_states(states)
    count = len(arrays)
    cut = math.floor(beta * count)
    result: NumpyState = {}
    for key, first in arrays[0].items():
        stacked = np.sort(np.stack([state[key].astype(np.float64) for state in arrays]), axis=0)  # (n, ...)
        result[key] = stacked[cut : count - cut].mean(axis=0).astype(first.dtype)
    return result


def _check_adam_hyper(eta: float, beta1: float, beta2: float, tau: float, step: int | None) -> None:
    """Validate FedAdam hyper-parameters."""
    if not eta > 0:
        raise ValueError(f"FedAdam eta must be > 0, got {eta!r}")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"FedAdam beta1 and beta2 must be in [0, 1), got {beta1!r} and {beta2!r}")
    if not tau > 0:
        raise ValueError(f"FedAdam tau must be > 0, got {tau!r}")
    if step is not None and step < 1:
        raise ValueError(f"FedAdam step must be >= 1, got {step!r}")


def _moment(moment: StateLike | None, reference: Mapping[str, np.ndarray], name: str) -> Mapping[str, np.ndarray]:
    """A moment state (zeros when ``None``), checked against the reference keys and shapes."""
    if moment is None:
        return {key: np.zeros_like(value, dtype=np.float64) for key, value in reference.items()}
    arrays = state_to_numpy(moment)
    mismatch = key_mismatch(reference.keys(), arrays.keys())
    if mismatch:
        raise ValueError(f"FedAdam moment {name} does not match the global state: {mismatch}")
    for key, value in arrays.items():
        if value.shape != reference[key].shape:
            raise ValueError(
                f"FedAdam moment {name} key {key!r} has shape {value.shape}, expected {reference[key].shape}"
            )
    return arrays


def fedadam_step(
    global_state: StateLike,
    average: StateLike,
    m: StateLike | None,
    v: StateLike | None,
    eta: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
    step: int | None = None,
) -> tuple[NumpyState, NumpyState, NumpyState]:
    """One FedAdam server update (Reddi et al. 2021, Algorithm 2), treating ``average - global`` as a gradient.

    ``delta = average - global``; ``m = beta1 m + (1 - beta1) delta``; ``v = beta2 v + (1 - beta2) delta^2``;
    ``global += eta_t m / (sqrt(v) + tau)``, with ``eta_t = eta`` (paper) or, when ``step`` is given, Adam's
    bias-corrected ``eta sqrt(1 - beta2^step) / (1 - beta1^step)`` (Flower's ``FedAdam`` uses
    ``step = server_round + 1``).

    Args:
        global_state: the current global weights.
        average: this round's weighted average of the site states (:func:`weighted_average`).
        m: first moment from the previous step, or ``None`` (zeros) at the first step.
        v: second moment from the previous step, or ``None`` (zeros).
        eta: server learning rate.
        beta1: first-moment decay.
        beta2: second-moment decay.
        tau: adaptivity (added to ``sqrt(v)``).
        step: 1-based step for bias correction, or ``None`` for none.

    Returns:
        ``(new_global, m, v)``, each in the global state's dtype. Example: global 0, average 1, first step,
        defaults: ``m = 0.1``, ``v = 0.01``, ``new_global = 0.1 * 0.1 / (0.1 + 0.001)``.

    Raises:
        ValueError: on bad hyper-parameters or inconsistent keys/shapes.
    """
    _check_adam_hyper(eta, beta1, beta2, tau, step)
    current, target = check_states([global_state, average], ["global state", "average"])
    m_prev, v_prev = _moment(m, current, "m"), _moment(v, current, "v")
    rate = eta if step is None else eta * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    new_global: NumpyState = {}
    new_m: NumpyState = {}
    new_v: NumpyState = {}
    for key, weights in current.items():
        delta = target[key].astype(np.float64) - weights.astype(np.float64)
        m_key = beta1 * m_prev[key].astype(np.float64) + (1 - beta1) * delta
        v_key = beta2 * v_prev[key].astype(np.float64) + (1 - beta2) * delta**2
        updated = weights.astype(np.float64) + rate * m_key / (np.sqrt(v_key) + tau)
        new_global[key] = updated.astype(weights.dtype)
        new_m[key] = m_key.astype(weights.dtype)
        new_v[key] = v_key.astype(weights.dtype)
    return new_global, new_m, new_v
