"""Server-side checks on one site update before it is aggregated.

A site update must look exactly like the global state it was trained from: same keys, shapes and dtypes,
only finite values, and (optionally) a bounded change. A broken or malicious site is rejected with a
one-line reason instead of poisoning the average.
"""

from __future__ import annotations

import math

import numpy as np

from endofed.federated.arrays import StateLike, key_mismatch, per_entry, state_to_numpy


def update_norm_ratio(state: StateLike, reference_state: StateLike) -> float:
    """``||state - reference|| / ||reference||`` over all entries together (L2; squares summed in float64).

    Both states must have the same keys and shapes (see :func:`validate_update`). A zero reference gives
    ``0.0`` for a zero update and ``inf`` otherwise.
    """
    arrays, reference = state_to_numpy(state), state_to_numpy(reference_state)

    def squares(key: str) -> tuple[float, float]:  # differences in the arrays' own dtype, squares summed in float64
        delta = np.subtract(arrays[key], reference[key]).ravel()
        flat = np.asarray(reference[key]).ravel()
        return float(np.einsum("i,i->", delta, delta, dtype=np.float64)), float(
            np.einsum("i,i->", flat, flat, dtype=np.float64)
        )

    sums = per_entry(squares, reference)  # entries on parallel threads, added up in key order
    update_sq, reference_sq = sum(u for u, _ in sums), sum(r for _, r in sums)
    if reference_sq == 0:
        return 0.0 if update_sq == 0 else math.inf
    return math.sqrt(update_sq / reference_sq)


def validate_update(state: StateLike, reference_state: StateLike, max_norm_ratio: float | None = None) -> float:
    """Reject a site update that does not match the global state it was trained from.

    Args:
        state: the site's returned weights.
        reference_state: the global weights sent to the site this round.
        max_norm_ratio: if given, the largest accepted ``||state - reference|| / ||reference||``
            (e.g. 1.0 = the update may be as large as the weights themselves).

    Returns:
        The update-norm ratio (for logging).

    Raises:
        ValueError: one line naming the first problem: keys, a key's shape or dtype, NaN/Inf, or the ratio.
    """
    if max_norm_ratio is not None and not max_norm_ratio > 0:
        raise ValueError(f"max_norm_ratio must be > 0, got {max_norm_ratio!r}")
    arrays, reference = state_to_numpy(state), state_to_numpy(reference_state)
    mismatch = key_mismatch(reference.keys(), arrays.keys())
    if mismatch:
        raise ValueError(f"update keys differ from the global state: {mismatch}")
    for key, ref in reference.items():
        value = arrays[key]
        if value.shape != ref.shape:
            raise ValueError(f"update {key!r} has shape {value.shape}, expected {ref.shape}")
        if value.dtype != ref.dtype:
            raise ValueError(f"update {key!r} has dtype {value.dtype}, expected {ref.dtype}")
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ValueError(f"update {key!r} contains NaN or Inf")
    ratio = update_norm_ratio(arrays, reference)
    if max_norm_ratio is not None and ratio > max_norm_ratio:
        raise ValueError(f"update norm is {ratio:.3g} x the global norm, above the bound {max_norm_ratio:g}")
    return ratio


def validate_num_examples(claimed: object, max_examples: int = 0, previous: int | None = None) -> int:
    """Reject a site's ``num-examples`` (its FedAvg weight) that cannot be true.

    A site could inflate its weight to dominate the average. The claim must be a whole number >= 1, at
    most ``max_examples`` (0 = no cap; set it from the sites' data passports), and, within one phase of a
    run, equal to what the same site claimed before (``previous``): its training set does not change
    between rounds.

    Returns:
        The count as an int.

    Raises:
        ValueError: one line naming the problem.
    """
    if isinstance(claimed, bool) or not isinstance(claimed, (int, float)) or not math.isfinite(claimed):
        raise ValueError(f"num-examples must be a number, got {claimed!r}")
    if claimed != int(claimed) or claimed < 1:
        raise ValueError(f"num-examples must be a whole number >= 1, got {claimed!r}")
    count = int(claimed)
    if max_examples and count > max_examples:
        raise ValueError(f"num-examples {count} is above the bound of {max_examples} volumes per site")
    if previous is not None and count != previous:
        raise ValueError(f"num-examples changed from {previous} to {count} within the phase")
    return count
