"""Flower strategies of the coordinator: Flower's own, plus a small mixin for endofed's bookkeeping.

The mixin extends the strategy hooks only (``configure_train``, ``aggregate_train``, ``aggregate_evaluate``);
the round loop stays Flower's. Per round it validates each site's update against the weights sent, drops a
broken one with a log line, and appends a JSON line: per site the volumes used, training loss, bytes down
and up, and the wall time of the round and of the aggregation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedTrimmedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from endofed.config import FederationConfig
from endofed.federated.bytes import state_nbytes
from endofed.federated.validate import validate_update
from endofed.training.records import JsonlWriter

LOGGER = logging.getLogger(__name__)
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


class RoundLogMixin:
    """Validation and per-site logging around a Flower strategy's train/evaluate aggregation."""

    phase: str = ""
    writer: JsonlWriter | None = None
    last_evaluation: dict[int, dict[str, float]]

    def setup_logging(self, phase: str, writer: JsonlWriter | None) -> None:
        """Name the phase and where round records go."""
        self.phase, self.writer, self.last_evaluation = phase, writer, {}
        self._sent: dict[str, np.ndarray] = {}
        self._round_started = time.perf_counter()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember what is sent (to validate replies and count bytes), then configure as usual."""
        self._sent = _numpy(arrays)
        self._round_started = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

    def _valid(self, replies: list[Message]) -> list[Message]:
        """Replies whose update matches the sent weights in keys, shapes, dtypes and finiteness."""
        kept = []
        for reply in replies:
            if reply.has_error():
                kept.append(reply)  # Flower counts and logs failures itself
                continue
            try:
                validate_update(_numpy(reply.content["arrays"]), self._sent)
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
        kept = self._valid(received)
        started = time.perf_counter()
        arrays, metrics = super().aggregate_train(server_round, kept)  # type: ignore[misc]
        aggregation = time.perf_counter() - started
        down = state_nbytes(self._sent)
        sites = [
            {
                "node": int(r.metadata.src_node_id),
                **{k: float(v) for k, v in r.content["metrics"].items() if isinstance(v, (int, float))},
                "bytes_down": down,
                "bytes_up": state_nbytes(_numpy(r.content["arrays"])),
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
    """The configured strategy for one phase; every site must take part in every round."""
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
    if fed.strategy == "fedprox":
        strategy = LoggedFedProx(proximal_mu=fed.proximal_mu, **common)
    elif fed.strategy == "fedadam":
        strategy = LoggedFedAdam(**common)
    elif fed.strategy == "trimmed_mean":
        strategy = LoggedFedTrimmedAvg(**common)
    else:
        strategy = LoggedFedAvg(**common)
    strategy.setup_logging(phase, writer)
    return strategy
