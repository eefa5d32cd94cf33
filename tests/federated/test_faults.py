"""The fault injector used to test the coordinator's defences, and the defences against each fault."""

from __future__ import annotations

import numpy as np
import pytest

from endofed.federated.bytes import payload_layout
from endofed.federated.faults import EVAL_FAULTS, FAULTS, Reply, leaking_exception, parse_fault_plan, spoil
from endofed.federated.schema import ArraySpec, ReplyContent, reply_problem
from endofed.federated.validate import validate_num_examples, validate_update


def test_fault_plans_parse_and_bad_ones_name_the_item():
    assert parse_fault_plan("nan@2, norm@3, eval-nan@2,") == {
        ("train", 2): "nan", ("train", 3): "norm", ("evaluate", 2): "eval-nan"
    }  # fmt: skip
    with pytest.raises(ValueError, match="bad fault 'fire@2'"):
        parse_fault_plan("fire@2")
    with pytest.raises(ValueError, match="bad fault 'nan@0'"):
        parse_fault_plan("nan@0")
    with pytest.raises(ValueError, match="train round 2 has two faults"):
        parse_fault_plan("nan@2,keys@2")


SENT = {"blocks.0.w": np.array([[0.5, -0.5], [1.0, 2.0]], np.float32), "norm.b": np.zeros(2, np.float32)}
HONEST = {k: v + np.float32(0.01) for k, v in SENT.items()}
METRICS = {"num-examples": 6, "train-loss": 0.5}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("nan", "contains NaN or Inf"),
        ("keys", "update keys differ"),
        ("shape", "has shape"),
        ("dtype", "has dtype float64"),
        ("norm", "above the bound 10"),
        ("examples", "num-examples changed from 6 to 6000"),
    ],
)
def test_every_array_fault_is_caught_by_the_update_checks(fault, reason):
    assert validate_update(HONEST, SENT, 10.0) < 10.0 and validate_num_examples(6, 0, 6) == 6  # honest passes
    spoiled = spoil(Reply(HONEST, METRICS), fault)
    assert np.array_equal(HONEST["blocks.0.w"], SENT["blocks.0.w"] + np.float32(0.01))  # input untouched
    with pytest.raises(ValueError, match=reason):
        validate_update(spoiled.arrays, SENT, 10.0)
        validate_num_examples(spoiled.metrics["num-examples"], 0, 6)


def _content(reply: Reply) -> ReplyContent:
    arrays = (
        {}
        if reply.arrays is None
        else {"arrays": {k: ArraySpec(str(v.dtype), v.shape) for k, v in reply.arrays.items()}}
    )
    metrics = {} if reply.metrics is None else {"metrics": reply.metrics}
    return ReplyContent(arrays, metrics, () if reply.config is None else ("site",))


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("metric-key", "outside the train schema"),
        ("metric-list", "'train-loss' is a list"),
        ("no-arrays", "array records none"),
        ("text-array", "has dtype <U40, expected float32"),
        ("uint8", "has dtype uint8"),
        ("config", "a config record"),
        ("dtype", "has dtype float64"),
    ],
)
def test_every_record_fault_is_caught_by_the_schema(fault, reason):
    allowed = payload_layout({k: v.shape for k, v in SENT.items()}, "fp32")
    assert reply_problem("train", _content(Reply(HONEST, METRICS)), allowed) is None
    assert reason in reply_problem("train", _content(spoil(Reply(HONEST, METRICS), fault)), allowed)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("eval-no-metrics", "metric records none"), ("eval-nan", "'auc' is nan"), ("eval-list", "'auc' is a list")],
)
def test_every_evaluate_fault_is_caught_by_the_schema(fault, reason):
    honest = Reply(None, {"num-examples": 6, "auc": 0.7})
    assert reply_problem("evaluate", _content(honest), {}) is None
    assert reason in reply_problem("evaluate", _content(spoil(honest, fault)), {})
    assert fault in EVAL_FAULTS


def test_the_raise_fault_names_a_subject_and_a_path_and_every_fault_is_described():
    text = str(leaking_exception())
    assert "sub-SECRET-4711" in text and "/hospital/" in text
    assert "raise" in FAULTS and all(FAULTS.values()) and all(EVAL_FAULTS.values())
