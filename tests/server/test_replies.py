"""The coordinator survives any reply: every malformed kind, through every real strategy class and the DP wrapper.

Each round has two honest sites (5, 6) and one hostile site (7) whose reply is spoiled one way; the round must
aggregate the honest two, and the round record must name node 7 and the reason. Before the screen each of these
raised out of Flower's aggregation and ended the ServerApp, or (evaluate) was averaged in.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from endofed.config import FederationConfig
from endofed.federated.packing import PACKED_PREFIX
from endofed.federated.privacy import PrivacyLedger
from endofed.federated.schema import ArraySpec
from endofed.io.jsonl import JsonlWriter
from server.privacy import make_private
from server.replies import screen
from server.strategies import STRATEGY_CLASSES, make_strategy

BASE = [3.0, 4.0]  # the global weights (norm 5)
PACKED = PACKED_PREFIX + "float32"


def _arrays(values) -> ArrayRecord:
    """The global weights as the server holds them (one entry ``w``)."""
    return ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))})


def _wire(values) -> ArrayRecord:
    """A reply's arrays on the wire: ``w`` in fp32, packed (one entry: the packed array is ``w`` itself)."""
    return ArrayRecord({PACKED: Array(np.asarray(values, dtype=np.float32))})


def _request(kind: str, node: int) -> Message:
    return Message(RecordDict({"config": ConfigRecord({})}), message_type=kind, dst_node_id=node)


def _honest(kind: str, node: int) -> RecordDict:
    if kind == MessageType.TRAIN:
        metrics = {"num-examples": 10, "train-loss": 0.5, "t-local": 1.0}
        return RecordDict({"arrays": _wire([3.0 + node / 100, 4.0]), "metrics": MetricRecord(metrics)})
    metrics = {"num-examples": 6, "auc": 0.5 + node / 100, "ece": 0.1}
    return RecordDict({"metrics": MetricRecord(metrics)})


def _set_metric(content: RecordDict, key: str, value) -> RecordDict:
    content["metrics"][key] = value
    return content


def _without(content: RecordDict, name: str) -> RecordDict:
    del content[name]
    return content


def _with(content: RecordDict, name: str, record) -> RecordDict:
    content[name] = record
    return content


TRAIN_KINDS = {  # kind -> (spoil the honest content, words of the reason)
    "extra metric key": (lambda c: _set_metric(c, "/data/sub-001/T2.nii.gz", 1.0), "outside the train schema"),
    "list-valued metric": (lambda c: _set_metric(c, "train-loss", [0.1] * 8192), "'train-loss' is a list"),
    "NaN metric": (lambda c: _set_metric(c, "train-loss", math.nan), "not a finite number"),
    "no arrays": (lambda c: _without(c, "arrays"), "array records none"),
    "no metrics": (lambda c: _without(c, "metrics"), "metric records none"),
    "no num-examples": (
        lambda c: _without(c, "metrics") and _with(c, "metrics", MetricRecord({"train-loss": 0.1})),
        "required metric 'num-examples' missing",
    ),  # fmt: skip
    "config record": (lambda c: _with(c, "site", ConfigRecord({"path": "/data"})), "a config record"),
    "second array record": (lambda c: _with(c, "decoder", _wire([1.0])), "array records 'arrays', 'decoder'"),
    "text array": (
        lambda c: _with(c, "arrays", ArrayRecord({PACKED: Array(np.array(["/data/sub-001"] * 2))})),
        "has dtype <U13, expected float32",
    ),  # fmt: skip
    "uint8 array": (lambda c: _with(c, "arrays", ArrayRecord({PACKED: Array(np.zeros(2, np.uint8))})), "dtype uint8"),
    "wrong shape": (lambda c: _with(c, "arrays", _wire([[3.0, 4.0]])), "has shape (1, 2)"),
    "fractional num-examples": (lambda c: _set_metric(c, "num-examples", 2.5), "whole number"),
    "10^12 volumes": (lambda c: _set_metric(c, "num-examples", 10**12), "above the bound of 10000"),
    "norm ratio 1e36": (lambda c: _with(c, "arrays", _wire([3e36, 4e36])), "above the bound 0.5"),
}
EVALUATE_KINDS = {
    "no metrics": (lambda c: _without(c, "metrics"), "metric records none"),
    "NaN AUC claiming 1e9 patients": (
        lambda c: _set_metric(_set_metric(c, "auc", math.nan), "num-examples", 10**9),
        "not a finite number",
    ),  # fmt: skip
    "1e9 patients": (lambda c: _set_metric(c, "num-examples", 10**9), "above the bound of 10000"),
    "extra metric key": (lambda c: _set_metric(c, "subject-1234", 0.9), "outside the evaluate schema"),
    "list-valued metric": (lambda c: _set_metric(c, "auc", [0.9] * 100), "'auc' is a list"),
    "train metric": (lambda c: _set_metric(c, "train-loss", 0.3), "outside the evaluate schema"),
    "arrays": (lambda c: _with(c, "arrays", _wire(BASE)), "array records 'arrays', expected none"),
}


def _replies(kind: str, spoil) -> list[Message]:
    return [Message(spoil(_honest(kind, n)) if n == 7 else _honest(kind, n), reply_to=_request(kind, n))
            for n in (5, 6, 7)]  # fmt: skip


def _last(path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


@pytest.fixture(autouse=True)
def _identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


@pytest.mark.parametrize("name", sorted(STRATEGY_CLASSES))
@pytest.mark.parametrize("kind", sorted(TRAIN_KINDS))
def test_a_malformed_train_reply_is_dropped_with_its_reason_and_the_round_goes_on(tmp_path, name, kind):
    spoil, reason = TRAIN_KINDS[kind]
    strategy = make_strategy(FederationConfig(strategy=name, quorum=2), "pretrain", False, JsonlWriter(tmp_path / "r"))
    strategy.prepare_round(_arrays(BASE))  # the default bounds: FederationConfig() as shipped
    if hasattr(strategy, "current_arrays"):  # FedAdam: configure_train hands it the weights sent
        strategy.current_arrays = dict(strategy._base)
    arrays, metrics = strategy.aggregate_train(1, _replies(MessageType.TRAIN, spoil))
    record = _last(tmp_path / "r")
    assert record["aggregated"] and sorted(s["node"] for s in record["sites"]) == [5, 6]
    (rejected,) = record["rejected"]
    assert rejected["node"] == 7 and reason in rejected["reason"], rejected
    assert np.all(np.isfinite(arrays["w"].numpy())) and abs(arrays["w"].numpy()[0] - 3.055) < 0.1


@pytest.mark.parametrize("kind", sorted(TRAIN_KINDS))
def test_under_central_dp_a_malformed_reply_is_dropped_before_it_is_clipped(tmp_path, kind):
    spoil, reason = TRAIN_KINDS[kind]
    fed = FederationConfig(quorum=2, dp_noise_multiplier=0.1, dp_clipping_norm=1.0, min_sites=3)
    writer = JsonlWriter(tmp_path / "r")
    private = make_private(make_strategy(fed, "pretrain", False, writer), fed, PrivacyLedger.from_config(fed))
    private.inner.prepare_round(_arrays(BASE))
    private.current_arrays = _arrays(BASE)
    private._asked = 3
    arrays, _ = private.aggregate_train(1, _replies(MessageType.TRAIN, spoil))
    records = [json.loads(line) for line in (tmp_path / "r").read_text().splitlines()]
    train = next(r for r in records if r["event"] == "train")
    privacy = next(r for r in records if r["event"] == "privacy")
    assert train["rejected"][0]["node"] == 7 and reason in train["rejected"][0]["reason"]
    assert privacy["nodes"] == [5, 6] and privacy["released"] and np.all(np.isfinite(arrays["w"].numpy()))


@pytest.mark.parametrize("kind", sorted(EVALUATE_KINDS))
def test_a_malformed_evaluate_reply_is_dropped_and_never_averaged(tmp_path, kind):
    spoil, reason = EVALUATE_KINDS[kind]
    strategy = make_strategy(FederationConfig(quorum=2), "finetune", True, JsonlWriter(tmp_path / "r"))
    metrics = strategy.aggregate_evaluate(1, _replies(MessageType.EVALUATE, spoil))
    record = _last(tmp_path / "r")
    assert record["event"] == "evaluate" and sorted(s["node"] for s in record["sites"]) == [5, 6]
    assert record["rejected"][0]["node"] == 7 and reason in record["rejected"][0]["reason"]
    assert metrics["auc"] == pytest.approx(0.555)  # the honest two, 6 patients each
    assert set(strategy.last_evaluation) == {5, 6}


def test_a_metric_one_site_cannot_give_is_missing_for_it_and_not_averaged(tmp_path):
    strategy = make_strategy(FederationConfig(quorum=2), "finetune", True, JsonlWriter(tmp_path / "r"))
    replies = [Message(_honest(MessageType.EVALUATE, n), reply_to=_request(MessageType.EVALUATE, n)) for n in (5, 6)]
    del replies[1].content["metrics"]["auc"]  # site 6's test set has one class: it leaves the AUC out
    metrics = strategy.aggregate_evaluate(1, replies)
    assert "auc" not in metrics and metrics["ece"] == pytest.approx(0.1)
    assert strategy.last_evaluation[5]["auc"] == pytest.approx(0.55) and math.isnan(strategy.last_evaluation[6]["auc"])


def test_screening_twice_keeps_what_it_kept_and_cuts_metrics_to_the_common_keys():
    replies = [Message(_honest(MessageType.TRAIN, n), reply_to=_request(MessageType.TRAIN, n)) for n in (5, 6)]
    del replies[0].content["metrics"]["t-local"]
    allowed = {PACKED: ArraySpec("float32", (2,))}
    first = screen(replies, "train", allowed, 100)
    assert [set(r.content["metrics"]) for r in first.kept] == [{"num-examples", "train-loss"}] * 2
    assert first.metrics[6]["t-local"] == 1.0  # the whole record is kept for the round log
    again = screen(first.kept, "train", allowed, 100)
    assert len(again.kept) == 2 and again.rejected == []
