from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.reference_aggregate import fedadam_step, trimmed_mean, weighted_average


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_weighted_average_by_hand():
    # (1*1 + 3*3) / 4 = 2.5 and (1*2 + 3*4) / 4 = 3.5
    result = weighted_average([{"w": _f32(1, 2)}, {"w": _f32(3, 4)}], [1, 3])
    np.testing.assert_array_equal(result["w"], _f32(2.5, 3.5))
    assert result["w"].dtype == np.float32


def test_weighted_average_several_keys_and_tensors():
    states = [
        {"a": torch.tensor([[0.0, 10.0]]), "b": torch.tensor(4.0)},
        {"a": torch.tensor([[6.0, 0.0]]), "b": torch.tensor(-2.0)},
        {"a": torch.tensor([[3.0, 5.0]]), "b": torch.tensor(1.0)},
    ]
    result = weighted_average(states, [2, 1, 0])  # a zero-weight site does not count
    # a: (2*0 + 6) / 3 = 2, (2*10 + 0) / 3 = 6.666...; b: (2*4 - 2) / 3 = 2
    np.testing.assert_allclose(result["a"], [[2.0, 20.0 / 3.0]], rtol=1e-7)
    np.testing.assert_allclose(result["b"], 2.0)
    assert result["a"].shape == (1, 2) and result["b"].shape == ()


def test_weighted_average_is_independent_of_the_weight_scale():
    states = [{"w": _f32(1, 2)}, {"w": _f32(3, 4)}]
    np.testing.assert_array_equal(weighted_average(states, [10, 30])["w"], weighted_average(states, [1, 3])["w"])


def test_weighted_average_does_not_modify_its_inputs():
    states = [{"w": _f32(1, 2)}, {"w": _f32(3, 4)}]
    weighted_average(states, [1, 1])
    np.testing.assert_array_equal(states[0]["w"], _f32(1, 2))
    np.testing.assert_array_equal(states[1]["w"], _f32(3, 4))


@pytest.mark.parametrize(
    ("states", "weights", "message"),
    [
        ([{"w": _f32(1)}, {"v": _f32(1)}], [1, 1], r"state 1 has different keys from state 0: missing \['w'\]"),
        ([{"w": _f32(1)}, {"w": _f32(1, 2)}], [1, 1], r"state 1 key 'w' has shape \(2,\), state 0 has \(1,\)"),
        ([{"w": _f32(1)}, {"w": np.ones(1)}], [1, 1], "dtype float64"),
        ([{"w": _f32(1)}, {"w": _f32(math.nan)}], [1, 1], "state 1 key 'w' contains NaN or Inf"),
        ([{"w": _f32(math.inf)}, {"w": _f32(1)}], [1, 1], "state 0 key 'w' contains NaN or Inf"),
        ([{"w": np.ones(1, dtype=np.int64)}], [1], "non-float dtype int64"),
        ([{"w": _f32(1)}, {"w": _f32(2)}], [0, 0], "total weight must be > 0"),
        ([{"w": _f32(1)}, {"w": _f32(2)}], [2, -1], "weight 1 must be finite and >= 0, got -1"),
        ([{"w": _f32(1)}, {"w": _f32(2)}], [1, math.nan], "weight 1 must be finite"),
        ([{"w": _f32(1)}, {"w": _f32(2)}], [1], "2 states, 1 weights"),
        ([], [], "at least one state"),
    ],
)
def test_weighted_average_refuses_bad_input(states, weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_average(states, weights)


def test_trimmed_mean_drops_the_extremes_by_hand():
    states = [{"w": _f32(v, -v)} for v in (-50, 1, 2, 3, 100)]
    # n = 5, beta = 0.2: drop 1 at each end -> mean(1, 2, 3) = 2 and mean(-1, -2, -3) = -2
    np.testing.assert_array_equal(trimmed_mean(states, 0.2)["w"], _f32(2, -2))


def test_trimmed_mean_with_nothing_cut_is_the_plain_mean():
    states = [{"w": _f32(v)} for v in (1, 2, 6)]
    np.testing.assert_array_equal(trimmed_mean(states, 0.0)["w"], _f32(3))
    np.testing.assert_array_equal(trimmed_mean(states, 0.3)["w"], _f32(3))  # floor(0.9) = 0


def test_trimmed_mean_is_per_coordinate():
    states = [{"w": _f32(0, 9)}, {"w": _f32(5, 1)}, {"w": _f32(9, 0)}, {"w": _f32(1, 5)}]
    # cut 1 each end: coordinate 0 keeps (1, 5) -> 3, coordinate 1 keeps (1, 5) -> 3
    np.testing.assert_array_equal(trimmed_mean(states, 0.25)["w"], _f32(3, 3))


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7])
def test_trimmed_mean_refuses_bad_beta(beta):
    with pytest.raises(ValueError, match="beta must be in"):
        trimmed_mean([{"w": _f32(1)}], beta)


def test_fedadam_first_step_by_hand():
    new, m, v = fedadam_step({"w": _f32(0.0)}, {"w": _f32(1.0)}, None, None, eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    # delta = 1, m = 0.1 * 1 = 0.1, v = 0.01 * 1 = 0.01, w = 0 + 0.1 * 0.1 / (sqrt(0.01) + 0.001)
    np.testing.assert_allclose(m["w"], [0.1], rtol=1e-6)
    np.testing.assert_allclose(v["w"], [0.01], rtol=1e-6)
    np.testing.assert_allclose(new["w"], [0.01 / 0.101], rtol=1e-6)


def test_fedadam_second_step_uses_the_moments():
    new, m, v = fedadam_step(
        {"w": _f32(1.0)},
        {"w": _f32(-1.0)},
        {"w": _f32(0.5)},
        {"w": _f32(0.04)},
        eta=1.0,
        beta1=0.5,
        beta2=0.75,
        tau=0.1,
    )
    # delta = -2, m = 0.5*0.5 + 0.5*(-2) = -0.75, v = 0.75*0.04 + 0.25*4 = 1.03
    np.testing.assert_allclose(m["w"], [-0.75], rtol=1e-6)
    np.testing.assert_allclose(v["w"], [1.03], rtol=1e-6)
    np.testing.assert_allclose(new["w"], [1.0 - 0.75 / (math.sqrt(1.03) + 0.1)], rtol=1e-6)


def test_fedadam_bias_correction_matches_adam():
    new, _, _ = fedadam_step({"w": _f32(0.0)}, {"w": _f32(1.0)}, None, None, step=2)
    # eta_t = 0.1 * sqrt(1 - 0.99^2) / (1 - 0.9^2) = 0.1 * sqrt(0.0199) / 0.19
    eta_t = 0.1 * math.sqrt(0.0199) / 0.19
    np.testing.assert_allclose(new["w"], [eta_t * 0.1 / (0.1 + 1e-3)], rtol=1e-6)


def test_fedadam_does_not_move_when_the_average_equals_the_global():
    new, m, v = fedadam_step({"w": _f32(2, 3)}, {"w": _f32(2, 3)}, None, None)
    np.testing.assert_array_equal(new["w"], _f32(2, 3))
    np.testing.assert_array_equal(m["w"], _f32(0, 0))
    np.testing.assert_array_equal(v["w"], _f32(0, 0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": 0.0}, "eta must be > 0"),
        ({"beta1": 1.0}, "beta1 and beta2"),
        ({"beta2": -0.1}, "beta1 and beta2"),
        ({"tau": 0.0}, "tau must be > 0"),
        ({"step": 0}, "step must be >= 1"),
    ],
)
def test_fedadam_refuses_bad_hyper_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fedadam_step({"w": _f32(0)}, {"w": _f32(1)}, None, None, **kwargs)


def test_fedadam_refuses_inconsistent_states():
    with pytest.raises(ValueError, match="average has different keys from global state"):
        fedadam_step({"w": _f32(0)}, {"x": _f32(1)}, None, None)
    with pytest.raises(ValueError, match=r"moment m does not match the global state: missing \['w'\]"):
        fedadam_step({"w": _f32(0)}, {"w": _f32(1)}, {"x": _f32(0)}, None)
    with pytest.raises(ValueError, match=r"moment v key 'w' has shape \(2,\)"):
        fedadam_step({"w": _f32(0)}, {"w": _f32(1)}, None, {"w": _f32(0, 0)})
