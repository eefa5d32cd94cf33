"""The fault injector used to test the coordinator's defences, and the defences against each fault."""

from __future__ import annotations

import numpy as np
import pytest

from endofed.federated.faults import FAULTS, corrupt, parse_fault_plan
from endofed.federated.validate import validate_num_examples, validate_update


def test_fault_plans_parse_and_bad_ones_name_the_item():
    assert parse_fault_plan("nan@2, norm@3,") == {2: "nan", 3: "norm"}
    with pytest.raises(ValueError, match="bad fault 'fire@2'"):
        parse_fault_plan("fire@2")
    with pytest.raises(ValueError, match="bad fault 'nan@0'"):
        parse_fault_plan("nan@0")
    with pytest.raises(ValueError, match="round 2 has two faults"):
        parse_fault_plan("nan@2,keys@2")


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
def test_every_injected_fault_is_caught_by_the_server_checks(fault, reason):
    sent = {"blocks.0.w": np.array([[0.5, -0.5], [1.0, 2.0]], np.float32), "norm.b": np.zeros(2, np.float32)}
    honest = {k: v + np.float32(0.01) for k, v in sent.items()}
    assert validate_update(honest, sent, 10.0) < 10.0 and validate_num_examples(6, 0, 6) == 6  # honest passes
    arrays, claimed = corrupt(honest, 6, fault)
    assert np.array_equal(honest["blocks.0.w"], sent["blocks.0.w"] + np.float32(0.01))  # input untouched
    with pytest.raises(ValueError, match=reason):
        validate_update(arrays, sent, 10.0)
        validate_num_examples(claimed, 0, 6)
    assert set(FAULTS) >= {fault}
