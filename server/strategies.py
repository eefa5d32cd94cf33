"""Flower strategies of the coordinator: Flower's own, plus a small mixin for endofed's bookkeeping, by name.

The mixin extends the strategy hooks only (``configure_train``, ``aggregate_train``, ``aggregate_evaluate``);
the round loop stays Flower's. Per round it validates each site's update against the weights sent, drops a
broken one with a log line, and appends a JSON line: per site the volumes used, training loss, bytes down
and up, and the wall time of the round and of the aggregation.

Wire formats (``federation.transport``, codecs in :mod:`endofed.federated.bytes`): the server keeps float32
master weights and aggregates float32 arrays whatever travels. ``bf16`` sends bfloat16 both ways. ``delta_int8``
sends bfloat16 down and receives int8 deltas against exactly those bf16 weights; the server adds each decoded
delta to its float32 master weights (not to their bf16 copy), so an update smaller than a bf16 step is not lost.

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
from endofed.federated.bytes import link_modes, payload_layout, state_nbytes
from endofed.federated.protocol import (
    ARRAYS,
    DEFAULT_TRANSPORT,
    EVALUATION_METRICS,
    FINETUNE,
    METRICS,
    NUM_EXAMPLES,
    TRANSPORT,
)
from endofed.federated.rounds import round_can_start, update_digest
from endofed.federated.schema import EVALUATE, TRAIN
from endofed.federated.strategies import FEDADAM, FEDAVG, FEDPROX, MEDIAN, TRIMMED_MEAN, phase_strategy
from endofed.federated.validate import validate_num_examples, validate_update
from endofed.io.jsonl import JsonlWriter
from server.replies import as_numpy as _numpy
from server.replies import average_metrics, decode, encode, failed_replies, screen

LOGGER = logging.getLogger(__name__)
OPTIMISER_MOMENTS = ("m_t", "v_t")  # FedAdam's server-side state (saved for --resume)


class RoundLogMixin:
    """Validation and per-site logging around a Flower strategy's train/evaluate aggregation."""

    strategy_name: str = ""  # its name in STRATEGY_CLASSES (endofed.federated.strategies)
    phase: str = ""
    transport: str = DEFAULT_TRANSPORT
    down: str = DEFAULT_TRANSPORT  # codec server -> site
    up: str = DEFAULT_TRANSPORT  # codec site -> server
    writer: JsonlWriter | None = None
    max_norm_ratio: float = 0.0  # bound on ||w - w_global|| / ||w_global|| (0 = off)
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
    ) -> None:
        """Name the phase, where round records go, the wire format, and the bounds on updates (0 = off)."""
        self.phase, self.writer, self.last_evaluation, self.transport = phase, writer, {}, transport
        self.max_norm_ratio, self.max_examples = max_norm_ratio, max_examples
        self._claims: dict[int, int] = {}  # node -> num-examples it claimed in this phase
        self._rejected: list[dict[str, Any]] = []  # this round's dropped replies: node and reason
        self._site_metrics: dict[int, dict[str, float]] = {}  # this round's kept replies' whole metric records
        self._norms: dict[int, float] = {}
        self.down, self.up = link_modes(transport)
        self._sent: dict[str, np.ndarray] = {}
        self._base: dict[str, np.ndarray] = {}
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
        """Wait for sites (bounded), encode for the wire, remember what is sent (to decode, validate, count bytes)."""
        self.await_sites(grid)
        wire = self.prepare_round(arrays)
        config[TRANSPORT] = self.transport
        messages = super().configure_train(server_round + self.round_offset, wire, config, grid)  # type: ignore[misc]
        if hasattr(self, "current_arrays"):  # FedOpt family: its server optimiser works on float32 weights
            self.current_arrays = dict(self._base)
        return messages  # type: ignore[no-any-return]

    def prepare_round(self, arrays: ArrayRecord) -> ArrayRecord:
        """The global weights encoded for the down-link; remembers what the sites receive and the master weights.

        Args:
            arrays: the float32 global (master) weights of this round.

        Returns:
            The arrays to send.
        """
        wire = encode(arrays, self.down)
        self._sent = _numpy(decode(wire, self.down))  # what the sites actually receive (their delta reference)
        # Decoded replies are relative to this: the float32 master weights for deltas, else what was sent.
        self._base = {k: np.array(v, dtype=np.float32) for k, v in _numpy(arrays).items()} if self.delta else self._sent
        self._sent_bytes = state_nbytes(_numpy(wire))
        self._round_started = time.perf_counter()
        self._rejected, self._site_metrics = [], {}
        return wire

    @property
    def delta(self) -> bool:
        """Whether sites reply with deltas (decoded as the float32 master weights + delta) or whole weights."""
        return self.up == "delta_int8"

    def decode_reply(self, arrays: ArrayRecord) -> ArrayRecord:
        """A site's reply as float32 weights: its delta added to the master weights, or its decoded weights.

        Raises:
            ValueError: if the payload does not fit the wire format, or the weights do not fit those sent.
        """
        decoded = decode(arrays, self.up, self._base if self.delta else None)
        self._last_norm = validate_update(_numpy(decoded), self._sent, self.max_norm_ratio or None)
        return decoded

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation messages carry the encoder in the same wire format (after the bounded wait for sites)."""
        config[TRANSPORT] = self.transport
        self._rejected = []
        if self.fraction_evaluate > 0:  # type: ignore[attr-defined]
            self.await_sites(grid)
        shifted = server_round + self.round_offset
        return super().configure_evaluate(shifted, encode(arrays, self.down), config, grid)  # type: ignore[misc]

    def _reject(self, node: int, reason: str) -> None:
        """Drop one reply: a log line and an entry in the round record."""
        LOGGER.warning("reply of node %s rejected: %s", node, reason)
        self._rejected.append({"node": node, "reason": reason})

    def screen_train(self, replies: Iterable[Message]) -> list[Message]:
        """The train replies that fit the schema and the bounds, and the error replies (see :func:`screen`).

        Idempotent: screening the kept replies again keeps them all (PrivateRounds screens before it clips).
        """
        allowed = payload_layout({k: v.shape for k, v in self._sent.items()}, self.up)
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

    def _valid(self, replies: list[Message]) -> list[Message]:
        """Replies decoded to float32 whose update matches the sent weights, in a fixed order (error replies dropped).

        A reply that cannot be decoded or does not match is dropped with a log line and kept in the round record
        (it never stops the run). The kept replies are sorted by the digest of their update, so the average
        (a floating-point sum) does not depend on the order in which the replies arrived.
        """
        kept, self._norms = [], {}
        for reply in replies:
            if reply.has_error():
                continue  # Flower's reply carries the error; it is counted as a failure in the round record
            node = int(reply.metadata.src_node_id)
            try:
                reply.content[ARRAYS] = self.decode_reply(reply.content[ARRAYS])
                claimed = reply.content[METRICS].get(NUM_EXAMPLES)
                self._claims[node] = validate_num_examples(claimed, self.max_examples, self._claims.get(node))
            except ValueError as exc:
                self._reject(node, str(exc))
                continue
            self._norms[node] = self._last_norm
            kept.append((update_digest(_numpy(reply.content[ARRAYS])), reply))
        return [reply for _, reply in sorted(kept, key=lambda item: item[0])]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, aggregate (with a quorum of valid updates), and log the round."""
        server_round += self.round_offset
        received = self.screen_train(replies)  # before anything reads a reply
        up_bytes = {int(r.metadata.src_node_id): state_nbytes(_numpy(r.content[ARRAYS])) for r in received
                    if not r.has_error()}  # fmt: skip
        kept = self._valid(received)  # back to float32 before averaging
        started = time.perf_counter()
        if len(kept) >= self.quorum:
            arrays, metrics = super().aggregate_train(server_round, kept)  # type: ignore[misc]
            arrays = None if arrays is None else self._as_master_dtype(arrays)
        else:
            LOGGER.warning("round %d: %d valid updates, below the quorum of %d: the global weights stay as they were",
                           server_round, len(kept), self.quorum)  # fmt: skip
            arrays, metrics = None, None
        aggregation = time.perf_counter() - started
        self.aggregated_rounds += arrays is not None
        down = self._sent_bytes
        sites = [
            {
                "node": int(r.metadata.src_node_id),
                **self._site_metrics[int(r.metadata.src_node_id)],
                "bytes_down": down,
                "bytes_up": up_bytes[int(r.metadata.src_node_id)],
                "update_norm_ratio": self._norms[int(r.metadata.src_node_id)],
            }
            for r in kept
        ]
        self._write(
            {
                "event": "train",
                "phase": self.phase,
                "round": server_round,
                "sites": sites,
                "failures": sum(r.has_error() for r in received),
                "failed": failed_replies(received),
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
        """What a resumed run needs besides the global weights: the server optimiser's moments and the claims.

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
        return arrays, meta

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], completed_rounds: int) -> None:
        """Continue a phase after ``completed_rounds`` rounds, with the state saved by :meth:`export_state`."""
        self.round_offset = completed_rounds
        for name in OPTIMISER_MOMENTS:
            moments = {k.removeprefix(f"{name}."): np.array(v) for k, v in arrays.items() if k.startswith(f"{name}.")}
            if moments:
                setattr(self, name, moments)
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


class LoggedFedMedian(RoundLogMixin, FedMedian):
    """Coordinate-wise median of the site updates (robust to an outlying site) with the round log."""

    strategy_name = MEDIAN


# name -> class, in the order of endofed.federated.strategies.STRATEGIES (tests/server/test_strategies.py checks it)
STRATEGY_CLASSES: dict[str, type[RoundLogMixin]] = {
    cls.strategy_name: cls for cls in (LoggedFedAvg, LoggedFedProx, LoggedFedAdam, LoggedFedTrimmedAvg, LoggedFedMedian)
}


def make_strategy(fed: FederationConfig, phase: str, evaluate: bool, writer: JsonlWriter | None) -> RoundLogMixin:
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
    strategy.setup_logging(phase, writer, fed.transport, fed.max_update_norm_ratio, fed.max_examples_per_site)
    strategy.setup_rounds(fed.min_sites, quorum, fed.node_wait_s)
    return strategy
