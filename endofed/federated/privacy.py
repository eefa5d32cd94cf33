"""Central differential privacy of the coordinator, free of Flower: clipping, noise and the privacy budget.

The mechanism (DP-FedAvg with fixed clipping, McMahan et al. 2018, arXiv:1710.06963): each site's update
``u_i = w_i - w_global`` is scaled to an L2 norm of at most ``C`` (the clipping norm); the release is

    w_global + (sum of the clipped updates) / n + N(0, (z * C / n)^2)   per coordinate,

where ``n`` is the number of sites asked to train in that round, fixed before any site replies. Every site
counts once, whatever its number of volumes (a weighted mean would give a large site more influence than
``C / n``). A site that fails, or whose update is rejected, adds nothing but still counts in ``n``: the sum
changes by at most ``C`` when one site's update is added or removed, so each round is one Gaussian
mechanism with noise multiplier ``z`` on that sum.

Accounting: every site takes part in every round, so there is no sampling amplification; ``T`` releases
compose to a Renyi-DP curve ``T * a / (2 z^2)`` (order ``a``), turned into ``(epsilon, delta)`` by
``dp_accounting``'s RDP accountant, the backend of Flower's own ``RdpAccountant``. Neighbouring means
adding or removing one site's update (``add-or-remove-one``); against *replacing* a site's data the same
noise gives the guarantee of ``z / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from endofed.config import FederationConfig
from endofed.errors import ConfigError
from endofed.federated.strategies import DP_STRATEGIES  # their aggregate is the mean the noise is calibrated for

_MAX_RELEASES = 10**7  # search bound of max_releases (far beyond any federated run)


def update_norm(update: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of a whole update, all entries together (accumulated in float64)."""
    return math.sqrt(sum(float(np.sum(np.square(value, dtype=np.float64))) for value in update.values()))


def clip_update(update: Mapping[str, np.ndarray], clipping_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """Scale an update down to an L2 norm of at most ``clipping_norm`` (an update within it is kept as is).

    Args:
        update: ``w_site - w_global`` per entry (floating-point arrays).
        clipping_norm: ``C > 0``.

    Returns:
        The clipped update (same keys and dtypes; new arrays) and the norm of the update before clipping.

    Raises:
        ValueError: a non-positive clipping norm, or a non-finite update norm.
    """
    if not clipping_norm > 0:
        raise ValueError(f"clipping_norm must be > 0, got {clipping_norm!r}")
    norm = update_norm(update)
    if not math.isfinite(norm):
        raise ValueError(f"update norm is {norm}; a NaN or Inf update cannot be clipped")
    scale = min(1.0, clipping_norm / norm) if norm > 0 else 1.0
    return {key: (value * scale).astype(value.dtype, copy=False) for key, value in update.items()}, norm


def noise_std(noise_multiplier: float, clipping_norm: float, sites: int) -> float:
    """Standard deviation of the Gaussian noise on the average of ``sites`` clipped updates: ``z * C / n``."""
    if sites < 1:
        raise ValueError(f"sites must be >= 1, got {sites!r}")
    return noise_multiplier * clipping_norm / sites


def private_average(
    base: Mapping[str, np.ndarray],
    clipped_updates: Sequence[Mapping[str, np.ndarray]],
    sites: int,
    std: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``base + sum(clipped_updates) / sites + N(0, std^2)``: the released global weights of one round.

    Args:
        base: the global weights the sites trained from (floating-point arrays).
        clipped_updates: the clipped updates of the sites that count, in a fixed order.
        sites: the fixed denominator ``n``: the sites asked this round (``>= len(clipped_updates)``).
        std: noise standard deviation per coordinate (see :func:`noise_std`).
        rng: the noise source; never one seeded from the (public) experiment seed.

    Returns:
        New arrays with ``base``'s keys and dtypes (noise drawn in float64, key by key in ``base`` order).

    Raises:
        ValueError: more updates than ``sites``, or a negative ``std``.
    """
    if len(clipped_updates) > sites:
        raise ValueError(f"{len(clipped_updates)} updates for a denominator of {sites} sites")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    released = {}
    for key, weights in base.items():
        total = np.zeros(weights.shape, dtype=np.float64)
        for update in clipped_updates:
            total += update[key]
        noise = rng.standard_normal(weights.shape) * std if std > 0 else 0.0
        released[key] = (weights.astype(np.float64) + total / sites + noise).astype(weights.dtype)
    return released


def epsilon_after(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``releases`` Gaussian releases with noise multiplier ``z`` (RDP, no sampling)."""
    if releases < 0:
        raise ValueError(f"releases must be >= 0, got {releases!r}")
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    if releases == 0:
        return 0.0
    from dp_accounting import dp_event, rdp  # a heavy import (scipy, mpmath): only when DP is on

    accountant = rdp.RdpAccountant()  # default orders, add-or-remove-one (as Flower's RdpAccountant)
    accountant.compose(dp_event.GaussianDpEvent(noise_multiplier), releases)
    return float(accountant.get_epsilon(delta))


def max_releases(noise_multiplier: float, delta: float, max_epsilon: float) -> int:
    """The most releases whose epsilon at ``delta`` stays within ``max_epsilon`` (epsilon grows with releases)."""
    if epsilon_after(noise_multiplier, 1, delta) > max_epsilon:
        return 0
    low, high = 1, 2
    while high < _MAX_RELEASES and epsilon_after(noise_multiplier, high, delta) <= max_epsilon:
        low, high = high, 2 * high
    while high - low > 1:  # epsilon(low) <= max_epsilon < epsilon(high)
        middle = (low + high) // 2
        low, high = (middle, high) if epsilon_after(noise_multiplier, middle, delta) <= max_epsilon else (low, middle)
    return low


@dataclass
class PrivacyLedger:
    """The privacy budget of one run, shared by both phases: the model leaves the server in every round.

    Attributes:
        noise_multiplier: ``z`` of every release.
        delta: the ``delta`` at which epsilon is reported.
        max_epsilon: no release may take epsilon above this (0 = no cap).
        releases: noisy global weights released so far (pre-training and fine-tuning rounds together).
    """

    noise_multiplier: float
    delta: float
    max_epsilon: float = 0.0
    releases: int = 0

    @classmethod
    def from_config(cls, fed: FederationConfig) -> PrivacyLedger | None:
        """The ledger of a run with ``fed``; ``None`` when DP is off (``dp_noise_multiplier`` 0)."""
        if not fed.dp_noise_multiplier > 0:
            return None
        return cls(fed.dp_noise_multiplier, fed.dp_delta, fed.dp_max_epsilon)

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far, at ``delta``."""
        return epsilon_after(self.noise_multiplier, self.releases, self.delta)

    def would_exceed(self) -> bool:
        """Whether one more release would take epsilon above ``max_epsilon`` (never, without a cap)."""
        if not self.max_epsilon > 0:
            return False
        return epsilon_after(self.noise_multiplier, self.releases + 1, self.delta) > self.max_epsilon

    def exhausted_message(self) -> str:
        """Why the next release is refused, in one line."""
        return (
            f"privacy budget exhausted: {self.releases} releases spent epsilon={self.epsilon:.4g} at "
            f"delta={self.delta:g}; one more would exceed federation.dp_max_epsilon={self.max_epsilon:g}"
        )

    def record_release(self) -> float:
        """Count one release; returns epsilon after it."""
        self.releases += 1
        return self.epsilon

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state (for the server state of a resumable run)."""
        return {"noise_multiplier": self.noise_multiplier, "delta": self.delta, "releases": self.releases}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` of the same configuration.

        Raises:
            ValueError: the state was saved with another noise multiplier or delta.
        """
        saved = (float(state["noise_multiplier"]), float(state["delta"]))
        if saved != (self.noise_multiplier, self.delta):
            raise ValueError(f"privacy state saved with (noise_multiplier, delta) = {saved}, "
                             f"this run has {(self.noise_multiplier, self.delta)}")  # fmt: skip
        self.releases = int(state["releases"])


def check_privacy_plan(fed: FederationConfig) -> float | None:
    """Check a DP run before it starts; returns the epsilon its rounds may spend (``None``: DP is off).

    Each federated round releases the global weights once, so the plan spends at most
    ``epsilon_after(z, pretrain_rounds + finetune_rounds, delta)``; a cap that this exceeds is refused now,
    rather than the run failing in its last rounds (the accounting does not depend on the data).

    Raises:
        ConfigError: a phase with rounds uses a strategy whose aggregate is not a mean of the site updates
            (fedadam, trimmed_mean: the noise would not match their sensitivity), or the plan exceeds
            ``federation.dp_max_epsilon``.
    """
    if not fed.dp_noise_multiplier > 0:
        return None
    finetune = fed.strategy if fed.finetune_strategy == "same" else fed.finetune_strategy
    for name, rounds, field in ((fed.strategy, fed.pretrain_rounds, "strategy"),
                                (finetune, fed.finetune_rounds, "finetune_strategy")):  # fmt: skip
        if rounds and name not in DP_STRATEGIES:
            raise ConfigError(f"federation.dp_noise_multiplier needs federation.{field} in {DP_STRATEGIES}, "
                              f"got {name!r}")  # fmt: skip
    rounds = fed.pretrain_rounds + fed.finetune_rounds
    planned = epsilon_after(fed.dp_noise_multiplier, rounds, fed.dp_delta)
    if fed.dp_max_epsilon > 0 and planned > fed.dp_max_epsilon:
        fit = max_releases(fed.dp_noise_multiplier, fed.dp_delta, fed.dp_max_epsilon)
        raise ConfigError(
            f"federation.dp_max_epsilon={fed.dp_max_epsilon:g} is too small for {rounds} rounds at "
            f"dp_noise_multiplier={fed.dp_noise_multiplier:g}: they spend epsilon={planned:.4g} at "
            f"delta={fed.dp_delta:g}; {fit} rounds fit (pre-training and fine-tuning together)"
        )
    return planned
