from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from endofed.federated.validate import update_norm_ratio, validate_num_examples, validate_update
from endofed.federated.weights import encoder_state


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


REFERENCE = {"a": _f32(3, 0), "b": _f32(4)}  # ||reference|| = 5


def test_a_good_update_passes_and_returns_the_ratio():
    update = {"a": _f32(3.6, 0), "b": _f32(4.8)}  # delta (0.6, 0, 0.8): norm 1 -> ratio 1 / 5
    assert validate_update(update, REFERENCE) == pytest.approx(0.2)
    assert validate_update(update, REFERENCE, max_norm_ratio=0.2 + 1e-6) == pytest.approx(0.2)


def test_tensors_and_arrays_can_be_compared():
    update = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}
    assert validate_update(update, REFERENCE) == 0.0


def test_an_update_that_is_too_large_is_refused():
    update = {"a": _f32(3, 10), "b": _f32(4)}  # norm 10 / 5 = 2
    with pytest.raises(ValueError, match="update norm is 2 x the global norm, above the bound 1.5"):
        validate_update(update, REFERENCE, max_norm_ratio=1.5)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"a": _f32(3, 0)}, r"update keys differ from the global state: missing \['b'\]"),
        ({"a": _f32(3, 0), "b": _f32(4), "head": _f32(1)}, r"unexpected \['head'\]"),
        ({"a": _f32(3, 0, 0), "b": _f32(4)}, r"update 'a' has shape \(3,\), expected \(2,\)"),
        ({"a": np.array([3, 0], dtype=np.float64), "b": _f32(4)}, "update 'a' has dtype float64, expected float32"),
        ({"a": _f32(3, math.nan), "b": _f32(4)}, "update 'a' contains NaN or Inf"),
        ({"a": _f32(3, 0), "b": _f32(-math.inf)}, "update 'b' contains NaN or Inf"),
    ],
)
def test_broken_updates_are_refused_with_one_line(update, message):
    with pytest.raises(ValueError, match=message) as info:
        validate_update(update, REFERENCE)
    assert "\n" not in str(info.value)


def test_bad_bound_is_refused():
    with pytest.raises(ValueError, match="max_norm_ratio must be > 0"):
        validate_update(REFERENCE, REFERENCE, max_norm_ratio=0.0)


def test_zero_reference():
    zero = {"w": _f32(0, 0)}
    assert update_norm_ratio(zero, zero) == 0.0
    assert update_norm_ratio({"w": _f32(0, 1)}, zero) == math.inf
    with pytest.raises(ValueError, match="above the bound"):
        validate_update({"w": _f32(0, 1)}, zero, max_norm_ratio=100.0)


def test_a_real_encoder_update(tiny_mae):
    reference = encoder_state(tiny_mae)
    update = {k: v + 0.001 for k, v in reference.items()}
    ratio = validate_update(update, reference, max_norm_ratio=1.0)
    numel = sum(v.numel() for v in reference.values())
    expected = math.sqrt(numel * 1e-6) / math.sqrt(sum(float((v.double() ** 2).sum()) for v in reference.values()))
    assert ratio == pytest.approx(expected, rel=1e-3)


def test_num_examples_must_be_plausible():
    assert validate_num_examples(12.0) == 12 and validate_num_examples(7, max_examples=7, previous=7) == 7
    for claimed, message in [
        (0, "whole number >= 1"),
        (2.5, "whole number"),
        (float("nan"), "must be a number"),
        (True, "must be a number"),
        ("12", "must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            validate_num_examples(claimed)
    with pytest.raises(ValueError, match="above the bound of 100"):
        validate_num_examples(1_000_000, max_examples=100)
    with pytest.raises(ValueError, match="changed from 40 to 4000"):
        validate_num_examples(4000, previous=40)
