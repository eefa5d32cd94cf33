from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from endofed.federated.audit import WithheldReply, append_audit, audit_outgoing
from endofed.federated.bytes import payload_layout, to_transport
from endofed.federated.protocol import EVALUATION_METRICS, OUTGOING_FILE
from endofed.federated.schema import ArraySpec, ReplyContent, describe
from endofed.finetune.metrics import METRIC_LABELS

SHAPES = {"blocks.0.attn.qkv.weight": (96, 32), "norm.weight": (32,)}
ALLOWED = payload_layout(SHAPES, "fp32")
TRAIN_METRICS = {"num-examples": 8, "train-loss": 0.5, "train-seconds": 1.5, "t-local": 1.2, "partition-id": 1}


def _train(arrays=None, metrics=None, configs=()) -> ReplyContent:
    return ReplyContent({"arrays": dict(ALLOWED) if arrays is None else arrays},
                        {"metrics": dict(TRAIN_METRICS) if metrics is None else metrics}, configs)  # fmt: skip


def test_the_encoder_and_schema_metrics_pass_with_a_record():
    record = audit_outgoing("train", _train(), ALLOWED)
    keys = ["num-examples", "partition-id", "t-local", "train-loss", "train-seconds"]
    assert record == {"message": "train", "arrays": 2, "array_values": 96 * 32 + 32, "metrics": keys}
    evaluation = ReplyContent({}, {"metrics": {"num-examples": 6, "auc": 0.75, "ece": 0.1}})
    assert audit_outgoing("evaluate", evaluation, ALLOWED)["arrays"] == 0  # evaluation replies: numbers only


def test_the_evaluation_metric_keys_are_those_the_site_computes():
    assert tuple(METRIC_LABELS) == EVALUATION_METRICS


@pytest.mark.parametrize(
    ("content", "message"),
    [  # the probe's findings first: a whole cached case as a metric, a path in a key, text and bytes as arrays
        (_train(metrics={**TRAIN_METRICS, "train-loss": [0.1] * 8192}), "'train-loss' is a list"),
        (_train(metrics={**TRAIN_METRICS, "/data/sub-001/T2.nii.gz": 1.0}), "outside the train schema"),
        (_train(arrays={**ALLOWED, "norm.weight": ArraySpec("<U40", (32,))}), "has dtype <U40, expected float32"),
        (_train(arrays={**ALLOWED, "norm.weight": ArraySpec("uint8", (32,))}), "has dtype uint8"),
        (_train(arrays={**ALLOWED, "norm.weight": ArraySpec("float64", (32,))}), "has dtype float64"),
        (_train(arrays={**ALLOWED, "norm.weight": ArraySpec("stype torch", (32,))}), "has dtype stype torch"),
        (_train(arrays={**ALLOWED, "decoder.pred.weight": ArraySpec("float32", (10, 2))}), "extra 'decoder.pred"),
        (_train(arrays={"norm.weight": ArraySpec("float32", (32,))}), "missing 'blocks.0.attn.qkv.weight'"),
        (_train(arrays={**ALLOWED, "norm.weight": ArraySpec("float32", (2, 16))}), "has shape (2, 16)"),
        (_train(metrics={**TRAIN_METRICS, "train-loss": True}), "'train-loss' is a bool"),
        (_train(metrics={**TRAIN_METRICS, "train-loss": float("nan")}), "not a finite number"),
        (_train(metrics={"train-loss": 0.5}), "required metric 'num-examples' missing"),
        (_train(metrics={**TRAIN_METRICS, "auc": 0.5}), "outside the train schema"),  # an evaluate key in train
        (_train(configs=("site",)), "a config record ('site')"),
        (ReplyContent({"arrays": dict(ALLOWED), "x": {}}, {"metrics": TRAIN_METRICS}), "array records 'arrays', 'x'"),
        (ReplyContent({}, {"metrics": TRAIN_METRICS}), "array records none, expected 'arrays'"),
        (ReplyContent({"arrays": dict(ALLOWED)}, {}), "metric records none"),
    ],
)
def test_anything_else_is_withheld_with_its_reason(content, message):
    with pytest.raises(WithheldReply, match="refusing to send the train reply") as info:
        audit_outgoing("train", content, ALLOWED)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (ReplyContent({"arrays": dict(ALLOWED)}, {"metrics": {"num-examples": 6}}), "array records 'arrays'"),
        (ReplyContent({}, {"metrics": {"num-examples": 6, "train-loss": 0.2}}), "outside the evaluate schema"),
        (ReplyContent({}, {"metrics": {"num-examples": 6, "auc": float("inf")}}), "'auc' is inf"),
        (ReplyContent({}, {}), "metric records none"),
    ],
)
def test_an_evaluate_reply_holds_test_metrics_only(content, message):
    with pytest.raises(WithheldReply, match=message):
        audit_outgoing("evaluate", content, ALLOWED)


def test_a_hostile_key_is_quoted_short():
    content = _train(metrics={**TRAIN_METRICS, "k" * 10_000: 1.0})
    with pytest.raises(WithheldReply) as info:
        audit_outgoing("train", content, ALLOWED)
    assert len(str(info.value)) < 400


def test_describe_reads_a_real_flower_record_dict():
    reference = {k: np.zeros(s, dtype=np.float32) for k, s in SHAPES.items()}
    payload = to_transport({k: v + 1 for k, v in reference.items()}, "delta_int8", reference)
    reply = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in payload.items()}),
                        "metrics": MetricRecord({"num-examples": 3, "auc": [0.1, 0.2]}),
                        "extra": ConfigRecord({"site": "/data/x"})})  # fmt: skip
    content = describe(reply)
    assert content.arrays["arrays"] == payload_layout(SHAPES, "delta_int8")
    assert content.metrics == {"metrics": {"num-examples": 3, "auc": [0.1, 0.2]}}
    assert content.configs == ("extra",)
    text = describe(RecordDict({"arrays": ArrayRecord({"w": Array(np.array(["/data/sub-001"] * 4))})}))
    assert text.arrays["arrays"]["w"].dtype.startswith("<U")


def test_audit_log_appends_json_lines(tmp_path):
    append_audit(tmp_path, {"message": "train", "arrays": 2})
    append_audit(tmp_path, {"message": "evaluate", "arrays": 0})
    lines = (tmp_path / OUTGOING_FILE).read_text().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["train", "evaluate"]
