"""What a site accepts from the coordinator, and the finiteness guard on everything it writes.

**The received encoder** is checked before the site touches its local state (:func:`check_received`): exactly
the model's shared keys and shapes, float32, finite, and within a norm bound of the last global the site knows
(:func:`max_change_ratio`). A failed check raises :class:`~endofed.federated.site_errors.GlobalRefused`: the
site replies with an error and keeps its state. Nothing non-finite is ever written (:func:`require_finite`).

**The bound, from measurement.** An honest global changes little per round: the largest ``update_norm_ratio``
of any site update in the demo and evidence runs (``runs/*/compare/units/*/federation/rounds.jsonl``: 5 runs,
both phases, 423 site updates) is 0.0234, and a FedAvg global step, a weighted mean of such updates, is at most
that; FedAdam with Flower's defaults (eta 0.1, tau 1e-3) moved the tiny model's global by at most 0.037 per
round (3 sites, 4 + 4 rounds). :data:`MAX_CHANGE_PER_ROUND` = 0.5 is 13x the latter and 21x the former, per
round between the last known global and the received one (a site that was away for n rounds accepts n x 0.5,
by the triangle inequality), while a coordinator's 1e36-scaled or unrelated encoder is far outside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from endofed.federated.arrays import StateLike, key_mismatch, per_entry, state_to_numpy
from endofed.federated.protocol import PHASES
from endofed.federated.site_errors import GlobalRefused, StateNotFinite
from endofed.federated.validate import update_norm_ratio

MAX_CHANGE_PER_ROUND = 0.5  # ||received - last known global|| / ||last known global|| per round apart (see above)


def require_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`StateNotFinite` naming the first floating-point entry of ``tensors`` with NaN or Inf."""
    for key, tensor in tensors.items():  # min and max are NaN if any value is, +-Inf if any is: one fast pass
        if tensor.is_floating_point() and tensor.numel() and not all(map(math.isfinite, torch.aminmax(tensor))):
            raise StateNotFinite(f"{what}: {key!r} contains NaN or Inf; nothing of this round is saved")


def rounds_apart(reference: tuple[str, int, int], phase: str, server_round: int | None) -> int:
    """Global rounds between a known global (``(phase, round, total_rounds)``) and one received now (>= 1).

    ``server_round`` is ``None`` for an evaluation, which comes at the end of a phase: the rest of the
    reference's phase then. From the end of pre-training into fine-tuning round k: the pre-training rounds
    left, plus k.
    """
    ref_phase, ref_round, ref_total = reference
    if server_round is None:
        return max(1, ref_total - ref_round + 1)
    if PHASES.index(ref_phase) < PHASES.index(phase):
        return max(1, ref_total - ref_round + server_round)
    return max(1, server_round - ref_round)  # a repeated round: the same global again (0 apart)


def max_change_ratio(apart: int, dp_allowance_ratio: float = 0.0) -> float:
    """The largest accepted change of the global over ``apart`` rounds, relative to its norm.

    :data:`MAX_CHANGE_PER_ROUND` each round, plus under central DP the most one private release can move it
    (:func:`dp_allowance` over the global's norm).
    """
    return (MAX_CHANGE_PER_ROUND + dp_allowance_ratio) * max(1, apart)


DP_NOISE_TAIL = 10.0  # P(||N(0, s^2 I_d)|| > s (sqrt(d) + t)) <= exp(-t^2 / 2): 2e-22 at t = 10


def dp_allowance(noise_multiplier: float, clipping_norm: float, min_sites: int, values: int) -> float:
    """The largest L2 change one central-DP release makes to the global, beyond chance (0 without DP).

    The release is ``global + (sum of clipped updates + N(0, (z C)^2 I)) / n`` over ``n >= min_sites`` sites
    (:func:`endofed.federated.privacy.private_average`): the mean of updates clipped to ``C`` moves it by at most
    ``C``, the noise of std ``s = z C / n`` per value by at most ``s (sqrt(d) + t)`` over ``d`` values except
    with probability ``exp(-t^2 / 2)`` (Gaussian norm concentration, ``t`` = :data:`DP_NOISE_TAIL`).

    Example: z = 1, C = 0.5, 2 sites, 10 000 values: 0.5 + 0.25 * (100 + 10) = 28.0.
    """
    if not noise_multiplier > 0:
        return 0.0
    sigma = noise_multiplier * clipping_norm / max(1, min_sites)
    return clipping_norm + sigma * (math.sqrt(values) + DP_NOISE_TAIL)


def check_received(
    received: StateLike,
    expected: Mapping[str, tuple[int, ...]],
    reference: StateLike | None = None,
    max_ratio: float | None = None,
) -> float | None:
    """Refuse a received encoder that is not the model's, not finite, or too far from the last known global.

    Args:
        received: the encoder entries sent by the server (numpy arrays or tensors).
        expected: the model's shared keys and their shapes (all float32).
        reference: the last global this site received and trained from (``None``: none yet, e.g. round 1).
        max_ratio: the largest accepted ``||received - reference|| / ||reference||`` (with ``reference``).

    Returns:
        The change ratio against ``reference`` (``None`` without one).

    Raises:
        GlobalRefused: one line naming the first problem.
    """
    arrays = state_to_numpy(received)
    mismatch = key_mismatch(expected, arrays)
    if mismatch:
        raise GlobalRefused(f"received encoder keys differ from the model's: {mismatch}")
    for key, shape in expected.items():
        value = arrays[key]
        if value.shape != tuple(shape) or value.dtype != np.float32:
            raise GlobalRefused(f"received {key!r} is {value.dtype} {value.shape}, expected float32 {tuple(shape)}")
    finite = per_entry(lambda key: bool(np.isfinite(arrays[key]).all()), expected)  # on parallel threads
    for key, ok in zip(expected, finite, strict=True):
        if not ok:
            raise GlobalRefused(f"received {key!r} contains NaN or Inf")
    if reference is None:
        return None
    ratio = update_norm_ratio(arrays, reference)
    if max_ratio is not None and not ratio <= max_ratio:
        raise GlobalRefused(
            f"received encoder is {ratio:.3g} x the last known global's norm away (bound {max_ratio:g})"
        )
    return ratio
