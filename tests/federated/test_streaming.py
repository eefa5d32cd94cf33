"""The streaming weighted mean: exact by hand, and bitwise the same for every order of the same updates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from endofed.federated.streaming import ExactSum


def test_weighted_mean_by_hand():
    total = ExactSum()
    total.add({"w": np.array([1.0, 2.0], np.float32)}, 1)
    total.add({"w": np.array([3.0, -2.0], np.float32)}, 3)
    np.testing.assert_array_equal(total.mean()["w"], [2.5, -1.0])  # (1 + 9) / 4 and (2 - 6) / 4
    assert (total.total, total.count) == (4, 2) and total.mean()["w"].dtype == np.float32


def test_the_small_parts_a_float64_sum_would_drop_are_kept():
    total = ExactSum()
    for value, weight in ((2.0**30, 1), (1.0, 1), (-(2.0**30), 1)):
        total.add({"w": np.array([value], np.float32)}, weight)
    assert total.mean()["w"][0] == np.float32(1 / 3)  # float64 would give the same here; the point is the order:
    reordered = ExactSum()
    for value in (2.0**30, -(2.0**30), 1.0):
        reordered.add({"w": np.array([value], np.float32)}, 1)
    assert reordered.mean()["w"][0] == total.mean()["w"][0]
    huge = ExactSum()  # 2^60 + 1 - 2^60 in float64 loses the 1; the pair keeps it
    for value in (2.0**60, 1.0, -(2.0**60)):
        huge.add({"w": np.array([value], np.float32)}, 1)
    assert huge.mean()["w"][0] == np.float32(1 / 3)


def test_every_order_of_the_same_updates_gives_the_same_bits_and_the_exact_mean():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.05, 4000).astype(np.float32)
    updates = [(base + rng.normal(0, 1e-3, base.size)).astype(np.float32) for _ in range(5)]
    weights = [3, 7, 1, 12, 9]
    results = []
    for order in itertools.permutations(range(5)):
        total = ExactSum()
        for index in order:
            total.add({"w": updates[index]}, weights[index])
        results.append(total.mean()["w"])
    assert all(np.array_equal(results[0], other) for other in results[1:])  # 120 orders, one result
    exact = np.array([math.fsum(w * float(u[i]) for u, w in zip(updates, weights, strict=True)) / sum(weights)
                      for i in range(base.size)], dtype=np.float32)  # fmt: skip
    np.testing.assert_array_equal(results[0], exact)  # and it is the correctly rounded exact mean here
    plain = sum(np.float64(w) * u for u, w in zip(updates, weights, strict=True)) / sum(weights)
    assert np.abs(plain.astype(np.float32).view(np.int32) - exact.view(np.int32)).max() <= 1  # float64: <= 1 ulp


def test_bad_input_is_refused():
    total = ExactSum()
    with pytest.raises(ValueError, match="no state"):
        total.mean()
    with pytest.raises(ValueError, match="positive integer"):
        total.add({"w": np.zeros(2, np.float32)}, 0)
    with pytest.raises(ValueError, match="positive integer"):
        total.add({"w": np.zeros(2, np.float32)}, 1.5)  # type: ignore[arg-type]
    total.add({"w": np.zeros(2, np.float32)}, 1)
    with pytest.raises(ValueError, match="keys differ"):
        total.add({"v": np.zeros(2, np.float32)}, 1)
    with pytest.raises(ValueError, match="must be float32 of shape"):
        total.add({"w": np.zeros(3, np.float32)}, 1)
    with pytest.raises(ValueError, match="must be float32 of shape"):
        total.add({"w": np.zeros(2, np.float64)}, 1)
