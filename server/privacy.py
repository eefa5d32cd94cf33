"""Central differential privacy of the coordinator: Flower's server-side fixed-clipping wrapper, made exact.

:class:`PrivateRounds` extends Flower's ``DifferentialPrivacyServerSideFixedClipping`` around one phase's
:class:`~server.strategies.RoundLogMixin` strategy (FedAvg or FedProx). Per round it

1. refuses to start the round if its release would exceed ``federation.dp_max_epsilon``
   (``PrivacyBudgetExhausted``, before any site is contacted);
2. clips each site's update ``w_site - w_global`` to ``federation.dp_clipping_norm`` *before* the wrapped
   strategy sees it (the wrapped strategy then validates, logs and averages the clipped weights as usual);
3. releases ``w_global + sum(clipped updates of the sites the strategy kept) / n + N(0, (z C / n)^2)``,
   ``n`` = the sites asked to train this round (see :mod:`endofed.federated.privacy`), in place of the
   wrapped strategy's ``num-examples``-weighted mean;
4. counts the release in the run's :class:`~endofed.federated.privacy.PrivacyLedger` and writes a
   ``"privacy"`` line to ``rounds.jsonl`` (epsilon so far, each site's update norm, how many were clipped).

Why not Flower's own accountant path: it requires ``aggregate_train is FedAvg.aggregate_train`` and equal
``num-examples``; the round log overrides ``aggregate_train``, and the sites' claims differ. Why not Flower's
clipping loop: it pairs arrays by position and crashes on a malformed reply, and its noise comes from numpy's
global generator with ``n`` fixed at construction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore import log

from endofed.config import FederationConfig
from endofed.federated.privacy import PrivacyLedger, clip_update, noise_std, private_average
from endofed.federated.protocol import ARRAYS
from endofed.federated.strategies import DP_COMPATIBLE
from server.replies import to_record
from server.strategies import RoundLogMixin

LOGGER = logging.getLogger(__name__)
PRIVACY_STATE = "privacy"  # key of the ledger's state in the strategy's exported bookkeeping


@dataclass
class _Clipped:
    """One site's clipped update, tied to the reply content it replaced (to find it among the kept ones)."""

    node: int
    content: RecordDict
    update: dict[str, np.ndarray]
    norm: float


class PrivateRounds(DifferentialPrivacyServerSideFixedClipping):
    """Server-side fixed clipping, equal-weight fixed-denominator average and Gaussian noise, with accounting.

    Use :func:`make_private` to build one. ``configure_evaluate``/``aggregate_evaluate`` go to the wrapped
    strategy unchanged (Flower's wrapper); the bookkeeping that ``server/app.py`` uses (``round_offset``,
    ``aggregated_rounds``, ``last_evaluation``, ``export_state``/``restore_state``) is forwarded, with the
    ledger added to the state.
    """

    def __init__(
        self,
        strategy: RoundLogMixin,
        fed: FederationConfig,
        ledger: PrivacyLedger,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(strategy, fed.dp_noise_multiplier, fed.dp_clipping_norm, fed.min_sites)  # type: ignore[arg-type]
        self.inner = strategy
        strategy.streams = False  # the release pairs FedAvg's averaged replies with their clipped updates
        self.ledger = ledger
        self.rng = rng if rng is not None else np.random.default_rng()  # OS entropy, never the experiment seed
        self._asked = 0  # sites asked to train this round: the fixed denominator
        self._kept: list[RecordDict] = []
        averaging = strategy.train_metrics_aggr_fn  # type: ignore[attr-defined]

        def capture(records: list[RecordDict], weighting_key: str) -> MetricRecord:
            # FedAvg.aggregate_train hands its metric hook exactly the replies it averages (those the round
            # log kept): the release sums their clipped updates only.
            self._kept = list(records)
            return averaging(records, weighting_key)

        strategy.train_metrics_aggr_fn = capture  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        """The wrapper and what it wraps."""
        return f"PrivateRounds(z={self.noise_multiplier:g}, C={self.clipping_norm:g}, {type(self.inner).__name__})"

    def summary(self) -> None:
        """Flower's summary of the wrapper and the wrapped strategy, then what it does not say."""
        super().summary()
        log(INFO, "\t└──> Central DP: every site weighs 1 (not num-examples), sum / sites asked; epsilon at "
            "delta=%g over %d releases so far, cap %s", self.ledger.delta, self.ledger.releases,
            f"{self.ledger.max_epsilon:g}" if self.ledger.max_epsilon > 0 else "none")  # fmt: skip

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Stop before a release that would exceed the budget; otherwise configure as the wrapped strategy."""
        if self.ledger.would_exceed():
            raise PrivacyBudgetExhausted(self.ledger.exhausted_message())
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._asked = len(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, clip, let the wrapped strategy validate and log, release the noisy fixed-denominator sum."""
        received = self.inner.screen_train(replies)  # the schema first: clipping reads the replies
        base = {key: np.asarray(value.numpy()) for key, value in self.current_arrays.items()}
        clipped = [entry for reply in received if (entry := self._clip(reply, base)) is not None]
        self._kept = []
        arrays, metrics = self.inner.aggregate_train(server_round, received)
        released = None
        if arrays is not None:  # the wrapped strategy would change the weights: release the private ones
            if not self._kept:
                raise RuntimeError("the wrapped strategy averaged replies without reporting which; nothing released")
            kept = [self._clipped_of(content, clipped) for content in self._kept]
            std = noise_std(self.noise_multiplier, self.clipping_norm, self._asked)
            values = private_average(base, [entry.update for entry in kept], self._asked, std, self.rng)
            released = ArrayRecord({key: Array(value) for key, value in values.items()})
            epsilon = self.ledger.record_release()
            LOGGER.info("round %d: private release %d (%d of %d sites), epsilon=%.4g at delta=%g", server_round,
                        self.ledger.releases, len(kept), self._asked, epsilon, self.ledger.delta)  # fmt: skip
        self._log(server_round, clipped, released is not None)
        return released, metrics

    def _clip(self, reply: Message, base: dict[str, np.ndarray]) -> _Clipped | None:
        """Clip one reply's update in place; ``None`` (reply left as is) when the round log will reject it."""
        if reply.has_error():
            return None
        try:  # the round log's own check: keys, shapes, dtypes, finite values (fp32 transport: the weights sent)
            weights = self.inner.decode_weights(reply.content.array_records[ARRAYS])
        except (ValueError, KeyError):
            return None  # the wrapped strategy rejects it again, with its log line and round record
        update, norm = clip_update({key: weights[key] - base[key] for key in base}, self.clipping_norm)
        reply.content[ARRAYS] = to_record({key: base[key] + update[key] for key in base})  # on the wire, as received
        return _Clipped(int(reply.metadata.src_node_id), reply.content, update, norm)

    @staticmethod
    def _clipped_of(content: RecordDict, clipped: list[_Clipped]) -> _Clipped:
        """The clipped update behind a reply the wrapped strategy averaged."""
        for entry in clipped:
            if entry.content is content:
                return entry
        raise RuntimeError("the wrapped strategy averaged a reply that was not clipped; nothing is released")

    def _log(self, server_round: int, clipped: list[_Clipped], released: bool) -> None:
        """Append this round's privacy record to the round log."""
        if self.inner.writer is None:
            return
        clipped = sorted(clipped, key=lambda entry: entry.node)
        self.inner.writer.write({
            "event": "privacy",
            "phase": self.inner.phase,
            "round": server_round + self.round_offset,
            "released": released,
            "releases": self.ledger.releases,
            "epsilon": self.ledger.epsilon,
            "delta": self.ledger.delta,
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
            "sites_asked": self._asked,
            "sites_averaged": len(self._kept) if released else 0,
            "clipped_sites": sum(entry.norm > self.clipping_norm for entry in clipped),
            "nodes": [entry.node for entry in clipped],
            "update_norms": [entry.norm for entry in clipped],
        })  # fmt: skip

    # --- the round log's bookkeeping, as server/app.py uses it -----------------------------------------------

    @property
    def round_offset(self) -> int:
        """Rounds of this phase completed before this run (a resumed run)."""
        return int(getattr(self.inner, "round_offset", 0))

    @property
    def aggregated_rounds(self) -> int:
        """Rounds whose updates were aggregated (and so privately released): the ServerApp's total-failure check."""
        return int(self.inner.aggregated_rounds)

    @property
    def last_evaluation(self) -> dict[int, dict[str, float]]:
        """Each site's latest test metrics."""
        return self.inner.last_evaluation

    @property
    def phase(self) -> str:
        """The phase of the wrapped strategy."""
        return self.inner.phase

    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The wrapped strategy's state, plus the privacy ledger (releases so far, all phases)."""
        arrays, meta = self.inner.export_state()
        return arrays, {**meta, PRIVACY_STATE: self.ledger.state_dict()}

    def restore_state(self, arrays: Any, meta: dict[str, Any], completed_rounds: int) -> None:
        """Continue the wrapped strategy and the ledger from :meth:`export_state`."""
        self.inner.restore_state(arrays, meta, completed_rounds)
        if PRIVACY_STATE not in meta:
            raise ValueError("the saved server state has no privacy ledger: it was saved by a run without DP")
        self.ledger.load_state_dict(meta[PRIVACY_STATE])
        # Conservative: in the fine-tuning phase the new noisy weights go to the sites for evaluation before the
        # round's state is saved, so the interrupted round may have released weights this ledger never counted.
        self.ledger.releases += 1
        LOGGER.warning("resumed under central DP: one extra release counted for the interrupted round (%d in all)",
                       self.ledger.releases)  # fmt: skip


def _averages(strategy: RoundLogMixin) -> bool:
    """Whether the round log hands its kept replies to FedAvg's mean (FedAvg, FedProx; not FedAdam, trimmed mean).

    The release relies on it (it sums the replies FedAvg's metric hook sees); it must agree with the DP flag of the
    strategy's name in :data:`endofed.federated.strategies.DP_COMPATIBLE` (a test checks every registered strategy).
    """
    following = getattr(super(RoundLogMixin, strategy), "aggregate_train", None)
    return getattr(following, "__func__", None) is FedAvg.aggregate_train


def make_private(
    strategy: RoundLogMixin,
    fed: FederationConfig,
    ledger: PrivacyLedger | None,
    rng: np.random.Generator | None = None,
) -> RoundLogMixin | PrivateRounds:
    """One phase's strategy under central DP when ``federation.dp_noise_multiplier > 0``, else unchanged.

    Args:
        strategy: the phase's strategy from :func:`server.strategies.make_strategy` (its writer gets the
            privacy records).
        fed: the federation config (noise multiplier, clipping norm, delta, cap).
        ledger: the run's ledger, shared by both phases (``PrivacyLedger.from_config(fed)``).
        rng: noise source (tests); by default a generator seeded from OS entropy.

    Raises:
        ValueError: DP is on but there is no ledger, the strategy is not DP-compatible
            (:data:`endofed.federated.strategies.DP_COMPATIBLE`: FedAdam, trimmed mean, median), or the transport
            is not fp32.
    """
    if not fed.dp_noise_multiplier > 0:
        return strategy
    if ledger is None:
        raise ValueError("federation.dp_noise_multiplier is set: pass the run's PrivacyLedger")
    if not (DP_COMPATIBLE.get(strategy.strategy_name, False) and _averages(strategy)):
        raise ValueError(f"central DP needs a FedAvg or FedProx strategy, got {type(strategy).__name__}")
    if strategy.transport != "fp32":  # clipping and noise act on the float32 updates as received
        raise ValueError(f"central DP needs federation.transport=fp32, got {strategy.transport!r}")
    return PrivateRounds(strategy, fed, ledger, rng)
