"""Flower strategies of the coordinator: Flower's own, plus a small mixin for endofed's bookkeeping.

The mixin extends the strategy hooks only (``configure_train``, ``aggregate_train``, ``aggregate_evaluate``);
the round loop stays Flower's. Per round it validates each site's update against the weights sent, drops a
broken one with a log line, and appends a JSON line: per site the volumes used, training loss, bytes down
and up, and the wall time of the round and of the aggregation.

Wire formats (``federation.transport``, codecs in :mod:`endofed.federated.bytes`): the server keeps float32
master weights and aggregates float32 arrays whatever travels. ``bf16`` sends bfloat16 both ways. ``delta_int8``
sends bfloat16 down and receives int8 deltas against exactly those bf16 weights; the server adds each decoded
delta to its float32 master weights (not to their bf16 copy), so an update smaller than a bf16 step is not lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedTrimmedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from endofed.config import FederationConfig
from endofed.federated.bytes import from_transport, link_modes, state_nbytes, to_transport
from endofed.federated.validate import validate_num_examples, validate_update
from endofed.training.federated_site import FINETUNE
from endofed.training.records import JsonlWriter

LOGGER = logging.getLogger(__name__)
NUM_EXAMPLES = "num-examples"  # the FedAvg weight a site claims (volumes it trained on)
SITE_TAG = "partition-id"  # identifies a simulated site in the per-site records; never averaged


def average_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's weighted metric average, leaving out the site tag (an average of ids means nothing)."""
    stripped = [
        RecordDict({name: MetricRecord({k: v for k, v in rec.items() if k != SITE_TAG})
                    for name, rec in record.metric_records.items()})
        for record in records
    ]  # fmt: skip
    return aggregate_metricrecords(stripped, weighting_key)


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord as numpy arrays."""
    return {key: value.numpy() for key, value in arrays.items()}


def encode(arrays: ArrayRecord, mode: str, reference: dict[str, np.ndarray] | None = None) -> ArrayRecord:
    """Arrays as they go on the wire in codec ``mode`` (``reference``: the state a delta is taken against)."""
    if mode == "fp32":
        return arrays
    return ArrayRecord({k: Array(v) for k, v in to_transport(_numpy(arrays), mode, reference).items()})


def decode(arrays: ArrayRecord, mode: str, reference: dict[str, np.ndarray] | None = None) -> ArrayRecord:
    """Float32 arrays from the wire format (``reference``: what a delta is added to)."""
    if mode == "fp32":
        return arrays
    return ArrayRecord({k: Array(v) for k, v in from_transport(_numpy(arrays), mode, reference).items()})


class RoundLogMixin:
    """Validation and per-site logging around a Flower strategy's train/evaluate aggregation."""

    phase: str = ""
    transport: str = "fp32"
    down: str = "fp32"  # codec server -> site
    up: str = "fp32"  # codec site -> server
    writer: JsonlWriter | None = None
    max_norm_ratio: float = 0.0  # bound on ||w - w_global|| / ||w_global|| (0 = off)
    max_examples: int = 0  # bound on a site's num-examples (0 = off)
    last_evaluation: dict[int, dict[str, float]]

    def setup_logging(
        self,
        phase: str,
        writer: JsonlWriter | None,
        transport: str = "fp32",
        max_norm_ratio: float = 0.0,
        max_examples: int = 0,
    ) -> None:
        """Name the phase, where round records go, the wire format, and the bounds on updates (0 = off)."""
        self.phase, self.writer, self.last_evaluation, self.transport = phase, writer, {}, transport
        self.max_norm_ratio, self.max_examples = max_norm_ratio, max_examples
        self._claims: dict[int, int] = {}  # node -> num-examples it claimed in this phase
        self.down, self.up = link_modes(transport)
        self._sent: dict[str, np.ndarray] = {}
        self._base: dict[str, np.ndarray] = {}
        self._round_started = time.perf_counter()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Encode for the wire, remember what is sent (to decode and validate replies, count bytes), configure."""
        wire = self.prepare_round(arrays)
        config["transport"] = self.transport
        messages = super().configure_train(server_round, wire, config, grid)  # type: ignore[misc]
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
        validate_update(_numpy(decoded), self._sent, self.max_norm_ratio or None)
        return decoded

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation messages carry the encoder in the same wire format."""
        config["transport"] = self.transport
        return super().configure_evaluate(server_round, encode(arrays, self.down), config, grid)  # type: ignore[misc]

    def _valid(self, replies: list[Message]) -> list[Message]:
        """Replies decoded to float32 whose update matches the sent weights in keys, shapes, dtypes and finiteness.

        A reply that cannot be decoded or does not match is dropped with a log line (it never stops the run).
        """
        kept = []
        for reply in replies:
            if reply.has_error():
                kept.append(reply)  # Flower counts and logs failures itself
                continue
            node = int(reply.metadata.src_node_id)
            try:
                reply.content["arrays"] = self.decode_reply(reply.content["arrays"])
                claimed = reply.content["metrics"].get(NUM_EXAMPLES)
                self._claims[node] = validate_num_examples(claimed, self.max_examples, self._claims.get(node))
            except (ValueError, KeyError) as exc:
                LOGGER.warning("round update of node %s rejected: %s", reply.metadata.src_node_id, exc)
                continue
            kept.append(reply)
        return kept

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, aggregate, and log the round."""
        received = list(replies)
        up_bytes = {int(r.metadata.src_node_id): state_nbytes(_numpy(r.content["arrays"])) for r in received
                    if not r.has_error()}  # fmt: skip
        kept = self._valid(received)  # back to float32 before averaging
        started = time.perf_counter()
        arrays, metrics = super().aggregate_train(server_round, kept)  # type: ignore[misc]
        aggregation = time.perf_counter() - started
        down = self._sent_bytes
        sites = [
            {
                "node": int(r.metadata.src_node_id),
                **{k: float(v) for k, v in r.content["metrics"].items() if isinstance(v, (int, float))},
                "bytes_down": down,
                "bytes_up": up_bytes[int(r.metadata.src_node_id)],
            }
            for r in kept
            if not r.has_error()
        ]
        self._write(
            {
                "event": "train",
                "phase": self.phase,
                "round": server_round,
                "sites": sites,
                "failures": len(received) - len(sites),
                "round_seconds": time.perf_counter() - self._round_started,
                "aggregation_seconds": aggregation,
            }
        )
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Keep and log each site's test metrics, then aggregate as usual."""
        received = list(replies)
        if not received:
            return None
        self.last_evaluation = {
            int(r.metadata.src_node_id): {k: float(v) for k, v in r.content["metrics"].items()}
            for r in received
            if not r.has_error()
        }
        self._write({"event": "evaluate", "phase": self.phase, "round": server_round, "sites": [
            {"node": node, **values} for node, values in self.last_evaluation.items()
        ]})  # fmt: skip
        return super().aggregate_evaluate(server_round, received)  # type: ignore[misc, no-any-return]

    def _write(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(record)


class LoggedFedAvg(RoundLogMixin, FedAvg):
    """FedAvg with endofed's validation and round log."""


class LoggedFedProx(RoundLogMixin, FedProx):
    """FedProx (the server sends ``proximal-mu``; the sites add the proximal term) with the round log."""


class LoggedFedAdam(RoundLogMixin, FedAdam):
    """FedAdam (server-side Adam on the averaged update) with the round log."""


class LoggedFedTrimmedAvg(RoundLogMixin, FedTrimmedAvg):
    """Trimmed-mean aggregation (robust to an outlying site) with the round log."""


def make_strategy(fed: FederationConfig, phase: str, evaluate: bool, writer: JsonlWriter | None) -> RoundLogMixin:
    """The configured strategy for one phase; every site must take part in every round.

    The fine-tuning phase uses ``federation.finetune_strategy`` unless that is ``same``.
    """
    name = fed.finetune_strategy if phase == FINETUNE and fed.finetune_strategy != "same" else fed.strategy
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0 if evaluate else 0.0,
        "min_train_nodes": fed.min_sites,
        "min_evaluate_nodes": fed.min_sites if evaluate else 0,
        "min_available_nodes": fed.min_sites,
        "train_metrics_aggr_fn": average_metrics,
        "evaluate_metrics_aggr_fn": average_metrics,
    }
    strategy: RoundLogMixin
    if name == "fedprox":
        strategy = LoggedFedProx(proximal_mu=fed.proximal_mu, **common)
    elif name == "fedadam":
        strategy = LoggedFedAdam(**common)
    elif name == "trimmed_mean":
        strategy = LoggedFedTrimmedAvg(**common)
    else:
        strategy = LoggedFedAvg(**common)
    strategy.setup_logging(phase, writer, fed.transport, fed.max_update_norm_ratio, fed.max_examples_per_site)
    return strategy
