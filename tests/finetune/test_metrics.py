"""Metrics: agreement with scikit-learn, hand-computed values, degenerate inputs, bootstrap behaviour."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from endofed.finetune import metrics as m

# Ten patients. Predictions at 0.5: [0,0,0,1,1,1,0,0,1,0]
# -> TP = 3 (idx 3, 5, 8), FN = 2 (idx 2, 7), FP = 1 (idx 4), TN = 4 (idx 0, 1, 6, 9).
Y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.9, 0.2, 0.45, 0.7, 0.3])


def synthetic(n: int, seed: int, signal: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and logistic scores whose separation grows with ``signal``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    logits = signal * (2 * y - 1) + rng.normal(size=n)
    return y, 1.0 / (1.0 + np.exp(-logits))


# ---------------------------------------------------------------------------------------------
# Point metrics
# ---------------------------------------------------------------------------------------------


def test_point_metrics_match_hand_counts_and_sklearn() -> None:
    pred = (S >= 0.5).astype(int)
    # AUC by pair counting: positives beat negatives in 3 + 5 + 5 + 4 + 5 = 22 of 25 pairs.
    assert m.auc(Y, S) == pytest.approx(22 / 25)
    assert m.auc(Y, S) == pytest.approx(roc_auc_score(Y, S))
    assert m.sensitivity(Y, S) == pytest.approx(3 / 5)
    assert m.sensitivity(Y, S) == pytest.approx(recall_score(Y, pred))
    assert m.specificity(Y, S) == pytest.approx(4 / 5)
    assert m.specificity(Y, S) == pytest.approx(recall_score(Y, pred, pos_label=0))
    assert m.balanced_accuracy(Y, S) == pytest.approx(0.7)
    assert m.balanced_accuracy(Y, S) == pytest.approx(balanced_accuracy_score(Y, pred))
    assert m.f1(Y, S) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert m.f1(Y, S) == pytest.approx(f1_score(Y, pred))


def test_metrics_agree_with_sklearn_on_random_inputs() -> None:
    y, s = synthetic(57, seed=3, signal=0.8)
    for threshold in (0.3, 0.5, 0.7):
        pred = (s >= threshold).astype(int)
        assert m.sensitivity(y, s, threshold) == pytest.approx(recall_score(y, pred))
        assert m.specificity(y, s, threshold) == pytest.approx(recall_score(y, pred, pos_label=0))
        assert m.balanced_accuracy(y, s, threshold) == pytest.approx(balanced_accuracy_score(y, pred))
        assert m.f1(y, s, threshold) == pytest.approx(f1_score(y, pred))
    assert m.auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_score_equal_to_threshold_is_positive() -> None:
    assert m.sensitivity([1], [0.5]) == 1.0
    assert m.specificity([0], [0.5]) == 0.0


def test_binary_metrics_returns_every_metric() -> None:
    result = m.binary_metrics(Y, S)
    assert list(result) == ["auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "ece"]
    assert result["auc"] == pytest.approx(0.88)
    assert result["ece"] == pytest.approx(m.expected_calibration_error(Y, S))
    assert all(isinstance(v, float) for v in result.values())


def test_accepts_bool_and_float_labels() -> None:
    assert m.auc(Y.astype(bool), S) == pytest.approx(0.88)
    assert m.auc(Y.astype(float), S.tolist()) == pytest.approx(0.88)


# ---------------------------------------------------------------------------------------------
# ECE
# ---------------------------------------------------------------------------------------------


def test_ece_hand_computed_two_bins() -> None:
    # Bins [0, 0.5) and [0.5, 1].
    # Bin 0: p = 0.2, 0.4 (labels 0, 1): conf 0.3, acc 0.5 -> 2/5 * |0.5 - 0.3| = 0.08
    # Bin 1: p = 0.6, 0.7, 0.9 (labels 0, 1, 1): conf 2.2/3, acc 2/3 -> 3/5 * |2/3 - 2.2/3| = 0.2/5 = 0.04
    # ECE = 0.08 + 0.04 = 0.12
    y = [0, 1, 0, 1, 1]
    p = [0.2, 0.4, 0.6, 0.7, 0.9]
    assert m.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.12)


def test_ece_perfect_ranking_is_not_perfect_calibration() -> None:
    # AUC is 1, but each case sits alone in its 10-bin bin:
    # |0 - 0.1| + |0 - 0.2| + |1 - 0.8| + |1 - 0.9| = 0.6, divided by N = 4 -> 0.15
    y = [0, 0, 1, 1]
    p = [0.1, 0.2, 0.8, 0.9]
    assert m.auc(y, p) == 1.0
    assert m.expected_calibration_error(y, p) == pytest.approx(0.15)
    # Certain and right: every case in bin 0 or bin 9 with acc == conf -> 0.
    assert m.expected_calibration_error(y, [0.0, 0.0, 1.0, 1.0]) == 0.0


def test_ece_edges_of_the_unit_interval() -> None:
    assert m.expected_calibration_error([0], [1.0]) == 1.0  # p = 1.0 lands in the last bin
    assert m.expected_calibration_error([1], [1.0]) == 0.0
    # p = 0.5 with two bins goes to bin 1 together with 0.9: conf 0.7, acc 0.5 -> |0.5 - 0.7| = 0.2
    assert m.expected_calibration_error([0, 1], [0.5, 0.9], n_bins=2) == pytest.approx(0.2)


def test_ece_matches_naive_loop() -> None:
    y, p = synthetic(101, seed=5, signal=0.7)
    for n_bins in (1, 5, 15):
        total = 0.0
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            inside = (p >= lo) & ((p < hi) if b < n_bins - 1 else (p <= hi))
            if inside.any():
                total += inside.sum() / p.size * abs(y[inside].mean() - p[inside].mean())
        assert m.expected_calibration_error(y, p, n_bins=n_bins) == pytest.approx(total)
    # One bin: |mean label - mean score|
    assert m.expected_calibration_error(y, p, n_bins=1) == pytest.approx(abs(y.mean() - p.mean()))


# ---------------------------------------------------------------------------------------------
# Degenerate inputs
# ---------------------------------------------------------------------------------------------


def test_single_class_gives_nan_where_undefined() -> None:
    positives = m.binary_metrics([1, 1, 1], [0.9, 0.2, 0.6])
    assert math.isnan(positives["auc"])
    assert math.isnan(positives["balanced_accuracy"])
    assert math.isnan(positives["specificity"])
    assert positives["sensitivity"] == pytest.approx(2 / 3)
    assert positives["f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert positives["ece"] == pytest.approx((0.1 + 0.8 + 0.4) / 3)
    negatives = m.binary_metrics([0, 0], [0.1, 0.2])
    assert math.isnan(negatives["auc"]) and math.isnan(negatives["sensitivity"])
    assert negatives["specificity"] == 1.0
    assert math.isnan(negatives["f1"])  # no true and no predicted positives: 0/0
    assert m.f1([0, 0], [0.9, 0.2]) == 0.0  # a false positive makes F1 defined (and zero)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_true", "y_score", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], "same length, got 3 and 2"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "only 0 and 1, got 2 at index 1"),
        ([0, float("nan")], [0.1, 0.2], "got nan at index 1"),
        ([0, 1], [0.1, 1.5], "in [0, 1], got 1.5 at index 1"),
        ([0, 1], [-0.1, 0.5], "got -0.1 at index 0"),
        ([0, 1], [0.1, float("nan")], "got nan at index 1"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
        ([], [], "empty"),
        (["a", "b"], [0.1, 0.2], "numeric"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(y_true: list, y_score: list, message: str) -> None:
    with pytest.raises(ValueError) as info:
        m.auc(y_true, y_score)
    assert message in str(info.value)


def test_bad_parameters_raise_value_error() -> None:
    with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\], got 1.5"):
        m.sensitivity(Y, S, threshold=1.5)
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1, got 0"):
        m.expected_calibration_error(Y, S, n_bins=0)
    with pytest.raises(ValueError, match="n_resamples must be an integer >= 0, got -1"):
        m.bootstrap_ci(Y, S, m.auc, n_resamples=-1, seed=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got 1.5"):
        m.bootstrap_ci(Y, S, m.auc, n_resamples=10, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha must be in \\(0, 1\\), got 0"):
        m.bootstrap_ci(Y, S, m.auc, n_resamples=10, seed=0, alpha=0)
    with pytest.raises(ValueError, match="same length"):
        m.paired_bootstrap_difference(Y, S, S[:-1], m.auc, n_resamples=10, seed=0)


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_point_and_is_deterministic() -> None:
    y, s = synthetic(60, seed=0)
    point, low, high = m.bootstrap_ci(y, s, m.auc, n_resamples=300, seed=7)
    assert point == pytest.approx(roc_auc_score(y, s))
    assert low < point < high <= 1.0
    assert m.bootstrap_ci(y, s, m.auc, n_resamples=300, seed=7) == (point, low, high)
    assert m.bootstrap_ci(y, s, m.auc, n_resamples=300, seed=8) != (point, low, high)


def test_bootstrap_resamples_patients_with_default_rng() -> None:
    y, s = synthetic(20, seed=1)
    idx = np.random.default_rng(11).integers(0, 20, size=20)
    (value,) = m.bootstrap_replicates(y, s, m.auc, n_resamples=1, seed=11)
    assert value == pytest.approx(roc_auc_score(y[idx], s[idx]))


def test_bootstrap_ci_narrows_with_more_cases() -> None:
    widths = []
    for n in (40, 400):
        y, s = synthetic(n, seed=2)
        _, low, high = m.bootstrap_ci(y, s, m.auc, n_resamples=300, seed=0)
        widths.append(high - low)
    # Width shrinks roughly like 1/sqrt(n): a factor ~3 for 10x the cases.
    assert widths[1] < 0.6 * widths[0]


def test_bootstrap_skips_single_class_resamples_for_auc(caplog: pytest.LogCaptureFixture) -> None:
    y = np.array([1, 0, 0, 0, 0, 0])  # one positive: about a third of resamples miss it
    s = np.array([0.9, 0.1, 0.5, 0.3, 0.2, 0.6])
    rng = np.random.default_rng(4)
    expected = 0
    for _ in range(200):
        drawn = y[rng.integers(0, 6, size=6)]
        expected += int(drawn.min() == 0 and drawn.max() == 1)
    assert 0 < expected < 200
    assert m.bootstrap_replicates(y, s, m.auc, n_resamples=200, seed=4).size == expected
    with caplog.at_level(logging.INFO, logger="endofed.finetune.metrics"):
        point, low, high = m.bootstrap_ci(y, s, m.auc, n_resamples=200, seed=4)
    assert f"auc: {expected} of 200 resamples used" in caplog.text
    assert point == 1.0 and low == high == 1.0  # the positive always ranks first


def test_bootstrap_of_undefined_metric_gives_nan_interval() -> None:
    point, low, high = m.bootstrap_ci([1, 1, 1], [0.2, 0.5, 0.9], m.auc, n_resamples=50, seed=0)
    assert math.isnan(point) and math.isnan(low) and math.isnan(high)


def test_zero_resamples_gives_point_only() -> None:
    point, low, high = m.bootstrap_ci(Y, S, m.auc, n_resamples=0, seed=0)
    assert point == pytest.approx(0.88)
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_all_covers_every_metric() -> None:
    y, s = synthetic(50, seed=6)
    result = m.bootstrap_all(y, s, n_resamples=100, seed=3)
    assert list(result) == list(m.METRICS)
    for name, (point, low, high) in result.items():
        assert point == pytest.approx(m.METRICS[name](y, s))
        assert low <= high
    assert result["auc"] == m.bootstrap_ci(y, s, m.auc, n_resamples=100, seed=3)


def test_paired_difference_of_identical_methods_is_zero() -> None:
    y, s = synthetic(30, seed=9)
    diff, low, high, p = m.paired_bootstrap_difference(y, s, s, m.auc, n_resamples=100, seed=0)
    assert (diff, low, high, p) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_detects_a_better_method() -> None:
    y, good = synthetic(80, seed=10, signal=2.0)
    noise = np.random.default_rng(12).random(80)
    diff, low, high, p = m.paired_bootstrap_difference(y, good, noise, m.auc, n_resamples=300, seed=1)
    assert diff == pytest.approx(m.auc(y, good) - m.auc(y, noise))
    assert 0 < low < diff < high
    assert p < 0.01
    back = m.paired_bootstrap_difference(y, noise, good, m.auc, n_resamples=300, seed=1)
    assert back[0] == pytest.approx(-diff)
    assert back[1] == pytest.approx(-high) and back[2] == pytest.approx(-low)
    assert back[3] > 0.99


def test_relative_improvement() -> None:
    assert m.relative_improvement(0.72, 0.55) == pytest.approx(0.17 / 0.55)
    assert m.relative_improvement(0.5, 0.5) == 0.0
    assert m.relative_improvement(0.4, 0.5) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="baseline must be > 0 for a relative improvement, got 0"):
        m.relative_improvement(0.7, 0)
    with pytest.raises(ValueError, match="got -0.1"):
        m.relative_improvement(0.7, -0.1)
    with pytest.raises(ValueError, match="new must be a finite number, got nan"):
        m.relative_improvement(float("nan"), 0.5)
