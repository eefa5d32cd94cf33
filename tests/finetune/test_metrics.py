"""Metrics: hand-computed values, scikit-learn as an independent reference, degenerate inputs, the bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from endofed.finetune import metrics as m

# Ten patients. Predictions at 0.5: [0,0,0,1,1,1,0,0,1,0]
# -> TP = 3 (idx 3, 5, 8), FN = 2 (idx 2, 7), FP = 1 (idx 4), TN = 4 (idx 0, 1, 6, 9).
Y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.9, 0.2, 0.45, 0.7, 0.3])
NAMES = ["auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "ece"]


def synthetic(n: int, seed: int, signal: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and logistic scores whose separation grows with ``signal``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    logits = signal * (2 * y - 1) + rng.normal(size=n)
    return y, 1.0 / (1.0 + np.exp(-logits))


def sklearn_reference(y: np.ndarray, s: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The threshold and ranking metrics as scikit-learn computes them (NaN where ours are undefined)."""
    pred = (s >= threshold).astype(int)
    both = 0 < y.sum() < y.size
    return {
        "auc": roc_auc_score(y, s) if both else math.nan,
        "balanced_accuracy": balanced_accuracy_score(y, pred) if both else math.nan,
        "sensitivity": recall_score(y, pred, zero_division=np.nan),
        "specificity": recall_score(y, pred, pos_label=0, zero_division=np.nan),
        "f1": f1_score(y, pred, zero_division=np.nan),
    }


# ---------------------------------------------------------------------------------------------
# Point metrics
# ---------------------------------------------------------------------------------------------


def test_point_metrics_match_hand_counts() -> None:
    # AUC by pair counting: positives beat negatives in 3 + 5 + 5 + 4 + 5 = 22 of 25 pairs.
    assert m.auc(Y, S) == pytest.approx(22 / 25)
    assert m.sensitivity(Y, S) == pytest.approx(3 / 5)
    assert m.specificity(Y, S) == pytest.approx(4 / 5)
    assert m.balanced_accuracy(Y, S) == pytest.approx(0.7)
    assert m.f1(Y, S) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))


def test_row_metrics_by_hand() -> None:
    values = {k: float(v[0]) for k, v in m.row_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).items()}
    # positive 0.35 beats 0.1, loses to 0.4; positive 0.8 beats both: 3 of 4 pairs
    assert values["auc"] == pytest.approx(0.75)
    # threshold 0.5 predicts only 0.8 positive: TP 1, FN 1, TN 2, FP 0
    assert values["sensitivity"] == 0.5 and values["specificity"] == 1.0 and values["balanced_accuracy"] == 0.75
    assert values["f1"] == pytest.approx(2 / 3)
    # one case per bin: (0.1 + 0.4 + 0.65 + 0.2) / 4
    assert values["ece"] == pytest.approx(0.3375)


def test_row_metrics_ties_and_undefined_rows() -> None:
    values = m.row_metrics([[0, 1], [1, 1]], [[0.5, 0.5], [0.2, 0.9]])
    assert values["auc"][0] == 0.5  # a tie counts half
    assert math.isnan(values["auc"][1]) and math.isnan(values["specificity"][1])  # one class only
    assert values["sensitivity"][1] == 0.5


def test_rows_are_independent() -> None:
    rng = np.random.default_rng(7)
    labels, scores = rng.integers(0, 2, (5, 12)), rng.random((5, 12))
    batch = m.row_metrics(labels, scores)
    for i in range(5):
        single = m.row_metrics(labels[i], scores[i])
        for name in NAMES:
            np.testing.assert_array_equal(batch[name][i], single[name][0], err_msg=name)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_metrics_agree_with_sklearn_on_random_inputs(threshold: float) -> None:
    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 2, (40, 6)), np.round(rng.random((40, 6)), 1)  # many ties, some 1-class rows
    ours = m.row_metrics(labels, scores, threshold=threshold)
    for name in ("auc", "balanced_accuracy", "sensitivity", "specificity", "f1"):
        reference = [sklearn_reference(y, s, threshold)[name] for y, s in zip(labels, scores, strict=True)]
        np.testing.assert_allclose(ours[name], reference, equal_nan=True, err_msg=name)
    y, s = synthetic(57, seed=3)
    assert m.sensitivity(y, s, threshold) == pytest.approx(sklearn_reference(y, s, threshold)["sensitivity"])
    assert m.auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_score_equal_to_threshold_is_positive() -> None:
    assert m.sensitivity([1], [0.5]) == 1.0
    assert m.specificity([0], [0.5]) == 0.0


def test_binary_metrics_returns_every_metric_in_order() -> None:
    result = m.binary_metrics(Y, S)
    assert list(result) == NAMES == list(m.METRICS) == list(m.METRIC_LABELS)
    assert result["auc"] == pytest.approx(0.88)
    assert result["ece"] == pytest.approx(m.expected_calibration_error(Y, S))
    assert all(isinstance(v, float) for v in result.values())
    assert {name: fn(Y, S) for name, fn in m.METRICS.items()} == result


def test_accepts_bool_and_float_labels() -> None:
    assert m.auc(Y.astype(bool), S) == pytest.approx(0.88)
    assert m.auc(Y.astype(float), S.tolist()) == pytest.approx(0.88)


# ---------------------------------------------------------------------------------------------
# ECE
# ---------------------------------------------------------------------------------------------


def test_ece_hand_computed_two_bins() -> None:
    # Bins [0, 0.5) and [0.5, 1].
    # Bin 0: p = 0.2, 0.4 (labels 0, 1): conf 0.3, acc 0.5 -> 2/5 * |0.5 - 0.3| = 0.08
    # Bin 1: p = 0.6, 0.7, 0.9 (labels 0, 1, 1): conf 2.2/3, acc 2/3 -> 3/5 * |2/3 - 2.2/3| = 0.04
    assert m.expected_calibration_error([0, 1, 0, 1, 1], [0.2, 0.4, 0.6, 0.7, 0.9], n_bins=2) == pytest.approx(0.12)


def test_ece_perfect_ranking_is_not_perfect_calibration() -> None:
    # AUC 1, but each case sits alone in its bin: (0.1 + 0.2 + 0.2 + 0.1) / 4 = 0.15
    y, p = [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]
    assert m.auc(y, p) == 1.0
    assert m.expected_calibration_error(y, p) == pytest.approx(0.15)
    assert m.expected_calibration_error(y, [0.0, 0.0, 1.0, 1.0]) == 0.0  # certain and right


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
    assert m.expected_calibration_error(y, p, n_bins=1) == pytest.approx(abs(y.mean() - p.mean()))


# ---------------------------------------------------------------------------------------------
# Degenerate and bad inputs
# ---------------------------------------------------------------------------------------------


def test_single_class_gives_nan_where_undefined() -> None:
    positives = m.binary_metrics([1, 1, 1], [0.9, 0.2, 0.6])
    assert math.isnan(positives["auc"]) and math.isnan(positives["balanced_accuracy"])
    assert math.isnan(positives["specificity"])
    assert positives["sensitivity"] == pytest.approx(2 / 3)
    assert positives["f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert positives["ece"] == pytest.approx((0.1 + 0.8 + 0.4) / 3)
    negatives = m.binary_metrics([0, 0], [0.1, 0.2])
    assert math.isnan(negatives["auc"]) and math.isnan(negatives["sensitivity"])
    assert negatives["specificity"] == 1.0
    assert math.isnan(negatives["f1"])  # no true and no predicted positives: 0/0
    assert m.f1([0, 0], [0.9, 0.2]) == 0.0  # a false positive makes F1 defined (and zero)


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
    with pytest.raises(ValueError, match="same shape"):
        m.row_metrics([[0, 1]], [[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="n_resamples must be an integer >= 0, got -1"):
        m.bootstrap_all(Y, S, n_resamples=-1, seed=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got 1.5"):
        m.bootstrap_all(Y, S, n_resamples=10, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha must be in \\(0, 1\\), got 0"):
        m.bootstrap_all(Y, S, n_resamples=10, seed=0, alpha=0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        m.bootstrap_all([0, 3], [0.1, 0.2], n_resamples=10, seed=0)


# ---------------------------------------------------------------------------------------------
# bootstrap_all (what `endofed finetune` reports)
# ---------------------------------------------------------------------------------------------


def test_bootstrap_all_is_the_percentile_interval_over_resampled_patients() -> None:
    y, s = synthetic(40, seed=6)
    result = m.bootstrap_all(y, s, n_resamples=200, seed=3)
    assert list(result) == NAMES
    draws = np.random.default_rng(3).integers(0, 40, size=(200, 40))  # every resample drawn at once
    for name, (point, low, high) in result.items():
        assert point == pytest.approx(m.METRICS[name](y, s))
        replicates = np.array([m.METRICS[name](y[idx], s[idx]) for idx in draws])
        finite = replicates[np.isfinite(replicates)]
        assert (low, high) == pytest.approx(tuple(np.percentile(finite, [2.5, 97.5])))
        assert low <= point <= high
    assert m.bootstrap_all(y, s, n_resamples=200, seed=3) == result
    assert m.bootstrap_all(y, s, n_resamples=200, seed=4)["auc"] != result["auc"]


def test_bootstrap_all_skips_resamples_where_a_metric_is_undefined() -> None:
    y = np.array([1, 0, 0, 0, 0, 0])  # one positive: about a third of resamples miss it
    s = np.array([0.9, 0.1, 0.5, 0.3, 0.2, 0.6])
    point, low, high = m.bootstrap_all(y, s, n_resamples=200, seed=4)["auc"]
    assert point == 1.0 and low == high == 1.0  # the positive always ranks first when drawn
    point, low, high = m.bootstrap_all([1, 1, 1], [0.2, 0.5, 0.9], n_resamples=50, seed=0)["auc"]
    assert math.isnan(point) and math.isnan(low) and math.isnan(high)


def test_bootstrap_all_without_resamples_gives_points_only() -> None:
    point, low, high = m.bootstrap_all(Y, S, n_resamples=0, seed=0)["auc"]
    assert point == pytest.approx(0.88)
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_interval_narrows_with_more_cases() -> None:
    widths = []
    for n in (40, 400):
        y, s = synthetic(n, seed=2)
        _, low, high = m.bootstrap_all(y, s, n_resamples=300, seed=0)["auc"]
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]  # roughly 1/sqrt(n): a factor ~3 for 10x the cases
