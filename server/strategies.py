"""Flower strategies of the coordinator: Flower's own, plus a small mixin for endofed's bookkeeping, by name.

The mixin extends the strategy hooks only (``configure_train``, ``aggregate_train``, ``aggregate_evaluate``);
the round loop stays Flower's. Per round it validates each site's update against the weights sent, drops a
broken one with a log line, and appends a JSON line: per site the volumes used, training loss, bytes down
and up, and the wall time of the round and of the aggregation.

What travels (``federation.transport``) is the wire half, :class:`server.wire.WireMixin`. Replies are
aggregated as they arrive (the ServerApp hands Flower's round loop a :class:`server.stream.StreamingGrid`):
FedAvg, FedProx and FedAdam fold each valid update into an :class:`~endofed.federated.streaming.ExactSum` and
drop it, so the server holds a fixed number of model copies whatever the number of sites, and the average does
not depend on the order of arrival. Trimmed mean and median need every update at once; they keep them, in digest
order, up to ``federation.max_buffered_mb`` (a round that would need more is refused with one line).

Registry: :data:`STRATEGY_CLASSES` maps every name of :mod:`endofed.federated.strategies` (the pure list the
config validates against, with the DP flags) to its class here; :func:`make_strategy` builds from it. Adding a
strategy: docs/extending.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg

from endofed.config import FederationConfig
from endofed.federated.bytes import state_nbytes
from endofed.federated.downlink import DownLink
from endofed.federated.packing import wire_layout
from endofed.federated.protocol import (
    ARRAYS,
    DEFAULT_TRANSPORT,
    EVALUATION_METRICS,
    FINETUNE,
    METRICS,
    NUM_EXAMPLES,
    TRANSPORT,
)
from endofed.federated.rounds import round_can_start
from endofed.federated.schema import EVALUATE, TRAIN
from endofed.federated.strategies import FEDADAM, FEDAVG, FEDPROX, MEDIAN, TRIMMED_MEAN, phase_strategy
from endofed.federated.validate import validate_num_examples
from endofed.io.jsonl import JsonlWriter
from server.replies import as_numpy as _numpy
from server.replies import average_metrics, failed_replies, screen
from server.tally import RoundTally
from server.wire import WireMixin

LOGGER = logging.getLogger(__name__)
OPTIMISER_MOMENTS = ("m_t", "v_t")  # FedAdam's server-side state (saved for --resume)
DOWNLINK_STATE = "downlink"  # server state meta: the int8 down-link's digest and holders (its view: view.* arrays)


class RoundLogMixin(WireMixin):
    """Validation and per-site logging around a Flower strategy's train/evaluate aggregation."""

    strategy_name: str = ""  # its name in STRATEGY_CLASSES (endofed.federated.strategies)
    streams: bool = True  # add updates up as they arrive (False: keep them all; order statistics, central DP)
    max_buffered_bytes: int = 0  # a buffering round refuses to start above this (0 = no bound)
    phase: str = ""
    writer: JsonlWriter | None = None
    max_examples: int = 0  # bound on a site's num-examples (0 = off)
    wanted_sites: int = 1  # sites a round waits for (federation.min_sites) ...
    quorum: int = 1  # ... before going on with at least this many (federation.quorum)
    node_wait_s: float = 600.0  # ... after this long
    round_offset: int = 0  # rounds of this phase completed before this strategy started (a resumed run)
    aggregated_rounds: int = 0  # rounds whose updates were aggregated (the total-failure check counts these)
    last_evaluation: dict[int, dict[str, float]]

    def setup_logging(
        self,
        phase: str,
        writer: JsonlWriter | None,
        transport: str = DEFAULT_TRANSPORT,
        max_norm_ratio: float = 0.0,
        max_examples: int = 0,
        downlink: DownLink | None = None,
    ) -> None:
        """Name the phase, where round records go, the wire format, and the bounds on updates (0 = off)."""
        self.phase, self.writer, self.last_evaluation = phase, writer, {}
        self.max_norm_ratio, self.max_examples = max_norm_ratio, max_examples
        self._claims: dict[int, int] = {}  # node -> num-examples it claimed in this phase
        self._rejected: list[dict[str, Any]] = []  # this round's dropped replies: node and reason
        self._site_metrics: dict[int, dict[str, float]] = {}  # this round's kept replies' whole metric records
        self._norms: dict[int, float] = {}
        self.setup_wire(transport, downlink)
        self._round_started = time.perf_counter()

    def setup_rounds(self, wanted_sites: int, quorum: int, node_wait_s: float) -> None:
        """How long a round waits for sites and how many valid updates it needs (see :func:`round_can_start`)."""
        self.wanted_sites, self.quorum, self.node_wait_s = wanted_sites, quorum, node_wait_s

    def await_sites(self, grid: Grid) -> int:
        """Wait until every expected site is connected, or ``node_wait_s`` has passed with a quorum; returns how many.

        Flower's own wait for ``min_available_nodes`` has no bound. This one does: the round then goes on with
        the sites that are there (a site that is down rejoins a later round).

        Raises:
            QuorumError: fewer than ``quorum`` sites are connected after ``node_wait_s``.
        """
        started = last_log = time.monotonic()
        while True:
            connected = len(list(grid.get_node_ids()))
            waited = time.monotonic() - started
            if round_can_start(connected, self.wanted_sites, self.quorum, waited, self.node_wait_s):
                if connected < self.wanted_sites:
                    LOGGER.warning("%d of %d sites connected after %.0f s: the round goes on with them",
                                   connected, self.wanted_sites, waited)  # fmt: skip
                return connected
            if time.monotonic() - last_log > 30:
                LOGGER.info("waiting for sites: %d of %d connected (%.0f s)", connected, self.wanted_sites, waited)
                last_log = time.monotonic()
            time.sleep(1.0)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Wait for sites (bounded), encode for the wire per site, remember what is sent (to decode and check)."""
        self.await_sites(grid)
        wire = self.prepare_round(arrays)
        self._round_started = time.perf_counter()
        self._rejected, self._site_metrics = [], {}
        config[TRANSPORT] = self.transport
        messages = list(super().configure_train(server_round + self.round_offset, wire, config, grid))  # type: ignore[misc]
        self._check_buffer(len(messages))
        if hasattr(self, "current_arrays"):  # FedOpt family: its server optimiser works on float32 weights
            self.current_arrays = dict(self._base)
        return self.address(messages)

    def _check_buffer(self, sites: int) -> None:
        """Refuse a buffering round (trimmed mean, median) whose updates would not fit ``max_buffered_bytes``.

        Raises:
            ValueError: one line with the memory needed and the bound.
        """
        needed = sites * state_nbytes(self._base)
        if not self.streams and self.max_buffered_bytes and needed > self.max_buffered_bytes:
            raise ValueError(
                f"{self.strategy_name} holds every site's update at once: {sites} sites x "
                f"{state_nbytes(self._base) / 1e6:.0f} MB = {needed / 1e6:.0f} MB, above federation.max_buffered_mb "
                f"({self.max_buffered_bytes / 1e6:.0f} MB); use fedavg, fedprox or fedadam (added up as they arrive) "
                "or raise the bound"
            )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation messages carry the encoder in the same wire format (after the bounded wait for sites)."""
        config[TRANSPORT] = self.transport
        self._rejected = []
        if self.fraction_evaluate > 0:  # type: ignore[attr-defined]
            self.await_sites(grid)
        wire, broadcast = self.evaluation_payload(arrays)
        messages = super().configure_evaluate(server_round + self.round_offset, wire, config, grid)  # type: ignore[misc]
        return self.address(messages, broadcast)

    def _reject(self, node: int, reason: str) -> None:
        """Drop one reply: a log line and an entry in the round record."""
        LOGGER.warning("reply of node %s rejected: %s", node, reason)
        self._rejected.append({"node": node, "reason": reason})

    def screen_train(self, replies: Iterable[Message]) -> list[Message]:
        """The train replies that fit the schema and the bounds, and the error replies (see :func:`screen`).

        Idempotent: screening the kept replies again keeps them all (PrivateRounds screens before it clips).
        """
        allowed = wire_layout({k: v.shape for k, v in self._sent.items()}, self.up)
        result = screen(replies, TRAIN, allowed, self.max_examples)
        for entry in result.rejected:
            self._reject(entry["node"], entry["reason"])
        for node, metrics in result.metrics.items():
            self._site_metrics.setdefault(node, metrics)
        return result.kept + result.errors

    def averaged_sites(self) -> dict[int, dict[str, float]]:
        """Node -> whole metric record of each site whose update this round kept (the model card lists these).

        Kept: it fit the schema and the bounds and passed the update checks.
        """
        return {node: dict(values) for node, values in self._site_metrics.items() if node in self._norms}

    def _fold(self, reply: Message, tally: RoundTally) -> None:
        """Decode and check one screened reply, then add it to the round (or drop it with a log line).

        A reply that cannot be decoded or does not match the weights sent is dropped and kept in the round
        record (it never stops the run). A streaming round adds the update to its running sum and drops the
        reply's arrays; a buffering one (trimmed mean, median) keeps the decoded reply.
        """
        node = int(reply.metadata.src_node_id)
        tally.up_bytes[node] = state_nbytes(_numpy(reply.content[ARRAYS]))
        try:
            decoded = self.decode_weights(reply.content[ARRAYS])
            claimed = reply.content[METRICS].get(NUM_EXAMPLES)
            self._claims[node] = validate_num_examples(claimed, self.max_examples, self._claims.get(node))
        except ValueError as exc:
            self._reject(node, str(exc))
            return
        self._norms[node] = self._last_norm
        started = time.perf_counter()
        tally.add(reply, decoded, self._claims[node])
        tally.seconds += time.perf_counter() - started

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, check and add up each reply as it arrives; aggregate with a quorum of valid updates; log."""
        server_round += self.round_offset
        tally, errors = RoundTally(streaming=self.streams), []
        self._norms = {}
        for reply in replies:  # one at a time: the ServerApp's StreamingGrid yields each reply as it arrives
            if not reply.has_error():
                self.confirm(int(reply.metadata.src_node_id))  # it committed this round's weights (down-link base)
            for screened in self.screen_train([reply]):  # before anything reads a reply
                if screened.has_error():
                    errors.append(screened)
                else:
                    self._fold(screened, tally)
        started = time.perf_counter()
        if tally.count >= self.quorum:
            arrays, metrics = super().aggregate_train(server_round, tally.replies())  # type: ignore[misc]
            arrays = None if arrays is None else self._as_master_dtype(arrays)
            metrics = average_metrics(tally.contents, NUM_EXAMPLES) if self.streams else metrics
        else:
            LOGGER.warning("round %d: %d valid updates, below the quorum of %d: the global weights stay as they were",
                           server_round, tally.count, self.quorum)  # fmt: skip
            arrays, metrics = None, None
        aggregation = tally.seconds + time.perf_counter() - started
        self.aggregated_rounds += arrays is not None
        sites = [
            {"node": node, **self._site_metrics[node], "bytes_down": self.bytes_down(node),
             "bytes_up": tally.up_bytes[node], "update_norm_ratio": self._norms[node]}
            for node in sorted(self._norms)
        ]  # fmt: skip
        self._write(
            {
                "event": "train",
                "phase": self.phase,
                "round": server_round,
                "sites": sites,
                "failures": len(errors),
                "failed": failed_replies(errors),
                "rejected": self._rejected,
                "aggregated": arrays is not None,
                "round_seconds": time.perf_counter() - self._round_started,
                "aggregation_seconds": aggregation,
            }
        )
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Screen, keep and log each site's test metrics (an undefined one is NaN), then aggregate as usual."""
        server_round += self.round_offset
        received = list(replies)
        if not received:
            return None
        result = screen(received, EVALUATE, {}, self.max_examples)
        for entry in result.rejected:
            self._reject(entry["node"], entry["reason"])
        undefined = dict.fromkeys(EVALUATION_METRICS, math.nan)  # a site leaves out a metric its test set cannot give
        self.last_evaluation = {node: undefined | metrics for node, metrics in result.metrics.items()}
        self._write({"event": "evaluate", "phase": self.phase, "round": server_round, "sites": [
            {"node": node, **values} for node, values in self.last_evaluation.items()
        ], "failures": len(result.errors), "failed": failed_replies(result.errors),
            "rejected": list(self._rejected)})  # fmt: skip
        return super().aggregate_evaluate(server_round, result.kept + result.errors)  # type: ignore[misc, no-any-return]

    def _as_master_dtype(self, arrays: ArrayRecord) -> ArrayRecord:
        """The aggregate in the master weights' dtypes (FedAdam's step, a float64 scalar times arrays, is float64)."""
        return ArrayRecord({k: Array(np.asarray(v.numpy(), dtype=self._base[k].dtype)) for k, v in arrays.items()})

    def _write(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write({**record, "time": round(time.time(), 3)})  # Unix time the record was written

    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What a resumed run needs besides the global weights: optimiser moments, claims, the down-link's view.

        The int8 down-link's view goes in as ``view.<key>`` arrays, its digest and holders in the meta.

        Returns:
            ``({"m_t.<key>": array, ...}, {"claims": {node: count}, "last_evaluation": {...}})``.
        """
        arrays = {f"{name}.{key}": np.asarray(value) for name in OPTIMISER_MOMENTS
                  for key, value in (getattr(self, name, None) or {}).items()}  # fmt: skip
        evaluation = {
            str(node): {k: v if math.isfinite(v) else None for k, v in values.items()}
            for node, values in self.last_evaluation.items()
        }  # strict JSON: an undefined metric is null
        meta = {"claims": {str(k): v for k, v in self._claims.items()}, "last_evaluation": evaluation}  # fmt: skip
        view, downlink = self.export_wire()
        return arrays | view, meta | ({DOWNLINK_STATE: downlink} if downlink else {})

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], completed_rounds: int) -> None:
        """Continue a phase after ``completed_rounds`` rounds, with the state saved by :meth:`export_state`."""
        self.round_offset = completed_rounds
        for name in OPTIMISER_MOMENTS:
            moments = {k.removeprefix(f"{name}."): np.array(v) for k, v in arrays.items() if k.startswith(f"{name}.")}
            if moments:
                setattr(self, name, moments)
        if self.downlink is not None and DOWNLINK_STATE in meta:  # the run's one down-link: later phases share it
            self.downlink.restore(arrays, meta[DOWNLINK_STATE])
        self._claims = {int(k): int(v) for k, v in meta.get("claims", {}).items()}
        self.last_evaluation = {int(node): {k: math.nan if v is None else float(v) for k, v in values.items()}
                                for node, values in meta.get("last_evaluation", {}).items()}  # fmt: skip

    @classmethod
    def options(cls, fed: FederationConfig) -> dict[str, Any]:
        """Constructor arguments of this strategy taken from the federation config (beyond the common ones)."""
        return {}


class LoggedFedAvg(RoundLogMixin, FedAvg):
    """FedAvg with endofed's validation and round log."""

    strategy_name = FEDAVG


class LoggedFedProx(RoundLogMixin, FedProx):
    """FedProx (the server sends ``proximal-mu``; the sites add the proximal term) with the round log."""

    strategy_name = FEDPROX

    @classmethod
    def options(cls, fed: FederationConfig) -> dict[str, Any]:
        """FedProx's ``proximal_mu``."""
        return {"proximal_mu": fed.proximal_mu}


class LoggedFedAdam(RoundLogMixin, FedAdam):
    """FedAdam (server-side Adam on the averaged update) with the round log."""

    strategy_name = FEDADAM


class LoggedFedTrimmedAvg(RoundLogMixin, FedTrimmedAvg):
    """Trimmed-mean aggregation (robust to an outlying site) with the round log."""

    strategy_name = TRIMMED_MEAN
    streams = False  # order statistics need every update at once


class LoggedFedMedian(RoundLogMixin, FedMedian):
    """Coordinate-wise median of the site updates (robust to an outlying site) with the round log."""

    strategy_name = MEDIAN
    streams = False  # order statistics need every update at once


# name -> class, in the order of endofed.federated.strategies.STRATEGIES (tests/server/test_strategies.py checks it)
STRATEGY_CLASSES: dict[str, type[RoundLogMixin]] = {
    cls.strategy_name: cls for cls in (LoggedFedAvg, LoggedFedProx, LoggedFedAdam, LoggedFedTrimmedAvg, LoggedFedMedian)
}


def make_strategy(fed: FederationConfig, phase: str, evaluate: bool, writer: JsonlWriter | None,
                  downlink: DownLink | None = None) -> RoundLogMixin:  # fmt: skip
    """The configured strategy for one phase: every connected site takes part in every round.

    A round waits up to ``federation.node_wait_s`` for ``federation.min_sites`` sites, then goes on with at least
    ``federation.quorum``; it changes the global weights only with a quorum of valid updates.

    The fine-tuning phase uses ``federation.finetune_strategy`` unless that is ``same``.

    Raises:
        ValueError: the configured name has no class in :data:`STRATEGY_CLASSES`.
    """
    name = phase_strategy(fed.strategy, fed.finetune_strategy, phase == FINETUNE)
    cls = STRATEGY_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"no strategy class for federation strategy {name!r}; known: {tuple(STRATEGY_CLASSES)}")
    quorum = fed.round_quorum
    common: dict[str, Any] = {  # Flower's own waits never block: the mixin's bounded wait comes first
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0 if evaluate else 0.0,
        "min_train_nodes": quorum,
        "min_evaluate_nodes": quorum if evaluate else 0,
        "min_available_nodes": quorum,
        "train_metrics_aggr_fn": average_metrics,
        "evaluate_metrics_aggr_fn": average_metrics,
    }
    strategy = cls(**common, **cls.options(fed))
    strategy.setup_logging(phase, writer, fed.transport, fed.max_update_norm_ratio, fed.max_examples_per_site,
                           downlink)  # fmt: skip
    strategy.setup_rounds(fed.min_sites, quorum, fed.node_wait_s)
    strategy.max_buffered_bytes = fed.max_buffered_mb * 10**6
    return strategy
