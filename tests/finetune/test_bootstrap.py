"""The resampling engine: draws, seed means, percentile intervals, paired differences and p, relative gains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from endofed.finetune import bootstrap as b
from endofed.finetune.metrics import row_metrics

LABELS = np.array([0, 0, 1, 1])
PROBS = np.array([0.1, 0.4, 0.35, 0.8])  # AUC 3/4


def mean_score(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """A toy row-wise statistic: the mean score of each row."""
    return {"mean": scores.mean(axis=1)}


def test_resamples_are_drawn_at_once_from_default_rng() -> None:
    expected = np.random.default_rng(5).integers(0, 7, size=(30, 7))  # how `endofed compare` always drew them
    np.testing.assert_array_equal(b.resample_indices(7, 30, 5), expected)
    assert b.resample_indices(7, 0, 5).shape == (0, 7)


def test_seed_mean_by_hand() -> None:
    scores = np.array([[0.2, 0.6], [0.4, 1.0]])  # two seeds, two patients
    draws = np.array([[0, 1], [1, 1], [0, 0]])
    # seed 0: 0.4, 0.6, 0.2; seed 1: 0.7, 1.0, 0.4 -> means 0.55, 0.8, 0.3
    np.testing.assert_allclose(b.seed_mean(mean_score, np.array([0, 1]), scores, draws)["mean"], [0.55, 0.8, 0.3])


def test_percentile_interval_by_hand() -> None:
    assert b.percentile_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), alpha=0.5) == (2.0, 4.0)
    # 2.5th and 97.5th percentiles of [0, 10] by linear interpolation, NaN ignored
    assert b.percentile_interval(np.array([0.0, math.nan, 10.0])) == pytest.approx((0.25, 9.75))
    assert all(math.isnan(v) for v in b.percentile_interval(np.array([math.nan])))


def test_seed_bootstrap_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    labels, scores = np.array([0, 1] * 5), rng.random((3, 10))
    result = b.seed_bootstrap(mean_score, labels, scores, n_resamples=50, seed=9)
    draws = np.random.default_rng(9).integers(0, 10, size=(50, 10))
    replicates = np.mean([row[draws].mean(axis=1) for row in scores], axis=0)
    point, low, high = result["mean"]
    assert point == pytest.approx(scores.mean())
    assert (low, high) == tuple(np.percentile(replicates, [2.5, 97.5]))


def test_seed_bootstrap_point_is_the_mean_over_seeds() -> None:
    perfect = np.array([0.1, 0.2, 0.7, 0.9])
    point, low, high = b.seed_bootstrap(row_metrics, LABELS, np.stack([PROBS, perfect]), 0, 0)["auc"]
    assert point == pytest.approx((0.75 + 1.0) / 2) and math.isnan(low) and math.isnan(high)


def test_seed_bootstrap_is_reproducible_and_contains_the_point() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 20)
    probs = np.clip(labels * 0.3 + rng.random((2, 40)) * 0.7, 0, 1)
    first = b.seed_bootstrap(row_metrics, labels, probs, 300, 5)
    assert first == b.seed_bootstrap(row_metrics, labels, probs, 300, 5)
    for point, low, high in first.values():
        assert low <= point <= high


def test_paired_difference_and_p_by_hand() -> None:
    # Patient 0: a - b = -0.2, patient 1: +0.2. A resample's mean difference is -0.2 (patient 0 twice),
    # +0.2 (patient 1 twice) or 0 (one each): it is <= 0 unless patient 1 was drawn twice.
    a, base = np.array([0.2, 0.6]), np.array([0.4, 0.4])
    diff, low, high, p = b.paired_difference(mean_score, [0, 1], a, base, 400, seed=2, name="mean")
    draws = np.random.default_rng(2).integers(0, 2, size=(400, 2))
    assert diff == pytest.approx(0.0)
    assert p == pytest.approx(np.mean(~(draws == 1).all(axis=1)))
    assert 0.6 < p < 0.9  # 3/4 in expectation
    assert (low, high) == pytest.approx((-0.2, 0.2))


def test_paired_difference_of_an_arm_with_itself_is_zero() -> None:
    assert b.paired_difference(row_metrics, LABELS, PROBS, PROBS, 200, 0) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_detects_a_clear_gain_and_is_antisymmetric() -> None:
    labels = np.array([0, 1] * 25)
    good = labels * 0.6 + 0.2  # perfect ranking
    noise = np.random.default_rng(3).random(50)  # chance-level ranking
    diff, low, high, p = b.paired_difference(row_metrics, labels, good, noise, 500, 0)
    assert diff > 0.3 and low > 0 and high <= 1.0 and p == 0.0
    back = b.paired_difference(row_metrics, labels, noise, good, 500, 0)
    assert back[0] == pytest.approx(-diff) and back[1] == pytest.approx(-high) and back[2] == pytest.approx(-low)
    assert back[3] == 1.0


def test_without_resamples_there_is_no_interval_or_p() -> None:
    diff, low, high, p = b.paired_difference(row_metrics, LABELS, PROBS, PROBS[::-1], 0, 0)
    # reversed scores [0.8, 0.35, 0.4, 0.1]: only positive 0.4 beats negative 0.35, 1 of 4 pairs
    assert diff == pytest.approx(0.75 - 0.25) and all(math.isnan(v) for v in (low, high, p))


def test_shapes_and_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="expected labels"):
        b.seed_bootstrap(row_metrics, LABELS, np.zeros((2, 3)), 10, 0)
    with pytest.raises(ValueError, match="n_resamples must be an integer >= 0, got True"):
        b.seed_bootstrap(row_metrics, LABELS, PROBS, True, 0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        b.paired_difference(row_metrics, LABELS, PROBS, PROBS, 10, -1)
    with pytest.raises(ValueError, match="alpha must be in \\(0, 1\\), got 1.0"):
        b.seed_bootstrap(row_metrics, LABELS, PROBS, 10, 0, alpha=1.0)


def test_relative_gain() -> None:
    assert b.relative_gain(0.72, 0.55) == pytest.approx(0.17 / 0.55)
    assert b.relative_gain(0.8, 0.5) == pytest.approx(0.6)
    assert b.relative_gain(0.5, 0.5) == 0.0
    assert b.relative_gain(0.4, 0.5) == pytest.approx(-0.2)
    for value, baseline in ((0.8, 0.0), (0.8, -0.1), (math.nan, 0.5), (0.5, math.inf)):
        assert math.isnan(b.relative_gain(value, baseline))


def test_mean_sd() -> None:
    assert b.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert b.mean_sd([0.5]) == (0.5, 0.0)
    assert b.mean_sd([math.nan, 0.25]) == (0.25, 0.0)
    assert all(math.isnan(v) for v in b.mean_sd([]))
