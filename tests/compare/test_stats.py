import math

import numpy as np
import pytest

from endofed.compare.stats import (
    batch_metrics,
    mean_sd,
    relative_gain,
    seed_bootstrap,
    seed_bootstrap_difference,
)
from endofed.finetune.metrics import METRICS

LABELS = np.array([0, 0, 1, 1])
PROBS = np.array([0.1, 0.4, 0.35, 0.8])


def test_batch_metrics_by_hand():
    m = {k: float(v[0]) for k, v in batch_metrics(LABELS, PROBS).items()}
    # positive 0.35 beats 0.1, loses to 0.4; positive 0.8 beats both: 3 of 4 pairs
    assert m["auc"] == pytest.approx(0.75)
    # threshold 0.5 predicts only 0.8 positive: TP 1, FN 1, TN 2, FP 0
    assert m["sensitivity"] == 0.5 and m["specificity"] == 1.0 and m["balanced_accuracy"] == 0.75
    assert m["f1"] == pytest.approx(2 / 3)
    # one case per bin: (0.1 + 0.4 + 0.65 + 0.2) / 4
    assert m["ece"] == pytest.approx(0.3375)


def test_batch_metrics_ties_and_undefined():
    m = batch_metrics([[0, 1], [1, 1]], [[0.5, 0.5], [0.2, 0.9]])
    assert m["auc"][0] == 0.5  # a tie counts half
    assert math.isnan(m["auc"][1]) and math.isnan(m["specificity"][1])  # one class only
    assert m["sensitivity"][1] == 0.5


def test_batch_metrics_agree_with_the_reference_metrics():
    rng = np.random.default_rng(1)
    labels, probs = rng.integers(0, 2, (200, 9)), np.round(rng.random((200, 9)), 1)  # many ties
    fast = batch_metrics(labels, probs)
    for name, fn in METRICS.items():
        reference = [fn(y, p) for y, p in zip(labels, probs, strict=True)]
        np.testing.assert_allclose(fast[name], reference, equal_nan=True, err_msg=name)


def test_seed_bootstrap_point_is_the_mean_over_seeds():
    perfect = np.array([0.1, 0.2, 0.7, 0.9])
    result = seed_bootstrap(LABELS, np.stack([PROBS, perfect]), n_resamples=0, seed=0)
    point, low, high = result["auc"]
    assert point == pytest.approx((0.75 + 1.0) / 2) and math.isnan(low) and math.isnan(high)


def test_seed_bootstrap_interval_contains_the_point_and_is_reproducible():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 20)
    probs = np.clip(labels * 0.3 + rng.random((2, 40)) * 0.7, 0, 1)
    first, again = seed_bootstrap(labels, probs, 300, 5), seed_bootstrap(labels, probs, 300, 5)
    assert first == again
    for point, low, high in first.values():
        assert low <= point <= high


def test_paired_difference_of_an_arm_with_itself_is_zero():
    diff, low, high, p = seed_bootstrap_difference(LABELS, PROBS, PROBS, 200, 0)
    assert diff == low == high == 0.0 and p == 1.0


def test_paired_difference_detects_a_clear_gain():
    labels = np.array([0, 1] * 25)
    good = labels * 0.6 + 0.2  # perfect ranking
    rng = np.random.default_rng(3)
    noise = rng.random(50)  # chance-level ranking
    diff, low, high, p = seed_bootstrap_difference(labels, good, noise, 500, 0)
    assert diff > 0.3 and low > 0 and high <= 1.0 and p == 0.0
    back = seed_bootstrap_difference(labels, noise, good, 500, 0)
    assert back[0] == pytest.approx(-diff) and back[2] < 0 and back[3] == 1.0


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected labels"):
        seed_bootstrap(LABELS, np.zeros((2, 3)), 10, 0)


def test_mean_sd_and_relative_gain():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([0.5]) == (0.5, 0.0)
    assert mean_sd([math.nan, 0.25]) == (0.25, 0.0)
    assert all(math.isnan(v) for v in mean_sd([]))
    assert relative_gain(0.8, 0.5) == pytest.approx(0.6)
    assert math.isnan(relative_gain(0.8, 0.0)) and math.isnan(relative_gain(math.nan, 0.5))
