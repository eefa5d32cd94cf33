"""Binary classification metrics, defined once, and their patient-level bootstrap confidence intervals.

Every metric takes 0/1 labels (one value = one patient) and the predicted probability of class 1. The
definition is :func:`row_metrics`, vectorised over rows of ``(B, N)`` arrays so that thousands of bootstrap
resamples take milliseconds; one set of scores is the one-row case (:func:`auc`, :func:`binary_metrics`, ...).
Threshold-based metrics predict positive when ``score >= threshold`` (0.5 by default).

Degenerate inputs give ``NaN``, never an exception: a metric that needs both classes (AUC, balanced
accuracy) is undefined when only one class is present, sensitivity is undefined without positives,
specificity without negatives, and F1 when there are neither true nor predicted positives (0/0). The
bootstrap (:mod:`endofed.finetune.bootstrap`) skips resamples on which a metric is ``NaN``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from endofed.finetune.bootstrap import Interval, seed_bootstrap

DEFAULT_THRESHOLD = 0.5
DEFAULT_ECE_BINS = 10

MetricFn = Callable[[ArrayLike, ArrayLike], float]
"""A metric of ``(y_true, y_score)`` returning a float (``NaN`` when undefined)."""

METRIC_LABELS = {
    "auc": "AUC",
    "balanced_accuracy": "balanced accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "f1": "F1",
    "ece": "ECE (lower is better)",
}
"""Every metric reported for a classifier, in report order, with its label for tables (AUC is the primary one)."""


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


def check_binary_inputs(y_true: ArrayLike, y_score: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Validate labels and scores and return them as 1-D ``int64`` / ``float64`` arrays.

    Args:
        y_true: 0/1 labels (bool, int or float 0.0/1.0), shape ``(N,)``.
        y_score: probability of class 1 for each case, shape ``(N,)``, finite and in [0, 1].

    Returns:
        ``(labels, scores)`` as new arrays.

    Raises:
        ValueError: naming the offending shape, dtype or value (with its index).
    """
    truth = np.asarray(y_true)
    score = np.asarray(y_score)
    for name, array in (("y_true", truth), ("y_score", score)):
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per patient), got shape {array.shape}")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    if truth.size != score.size:
        raise ValueError(f"y_true and y_score must have the same length, got {truth.size} and {score.size}")
    if truth.size == 0:
        raise ValueError("y_true and y_score are empty; at least one case is needed")
    bad_label = np.flatnonzero((truth != 0) & (truth != 1))
    if bad_label.size:
        i = int(bad_label[0])
        raise ValueError(f"y_true must contain only 0 and 1, got {truth[i].item()!r} at index {i}")
    scores = score.astype(np.float64)
    bad_score = np.flatnonzero(~(np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0)))
    if bad_score.size:
        i = int(bad_score[0])
        raise ValueError(f"y_score must be probabilities in [0, 1], got {score[i].item()!r} at index {i}")
    return truth.astype(np.int64), scores


def _check_parameters(threshold: float, n_bins: int) -> None:
    """Require a threshold in [0, 1] and an integer bin count >= 1."""
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if isinstance(n_bins, (bool, np.bool_)) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")


# --------------------------------------------------------------------------------------------------
# The definition: every metric, row by row
# --------------------------------------------------------------------------------------------------


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    """``num / den`` with NaN where ``den`` is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _ece(y: NDArray[np.float64], p: NDArray[np.float64], n_bins: int) -> NDArray[np.float64]:
    """Per row: ``sum_m |positives_m - confidence_m| / N`` over equal-width bins of ``p`` (see :func:`row_metrics`)."""
    rows, width = p.shape
    bins = np.minimum(np.floor(p * n_bins).astype(np.int64), n_bins - 1) + n_bins * np.arange(rows)[:, None]
    gap = np.bincount(bins.ravel(), weights=(y - p).ravel(), minlength=rows * n_bins).reshape(rows, n_bins)
    return np.abs(gap).sum(axis=1) / width


def row_metrics(
    labels: ArrayLike, scores: ArrayLike, threshold: float = DEFAULT_THRESHOLD, n_bins: int = DEFAULT_ECE_BINS
) -> dict[str, NDArray[np.float64]]:
    """Every metric of :data:`METRIC_LABELS` for each row of ``labels`` and ``scores`` (both ``(B, N)``, or ``(N,)``).

    Definitions, per row of ``N`` cases with ``P`` positives and ``Q`` negatives:

    * ``auc``: the Mann-Whitney statistic, the share of (positive, negative) pairs where the positive scores
      higher, a tie counting half: ``(sum of the positives' average ranks - P(P+1)/2) / (P Q)``.
    * with ``pred = score >= threshold``: ``sensitivity`` TP / P, ``specificity`` TN / Q,
      ``balanced_accuracy`` their mean, ``f1`` 2TP / (2TP + FP + FN).
    * ``ece``: split [0, 1] into ``M = n_bins`` equal-width bins; case ``i`` goes to bin
      ``min(floor(p_i M), M - 1)`` (the last bin includes 1.0). With ``n_m`` cases in bin ``m``, ``acc_m``
      the share of them labelled 1 and ``conf_m`` their mean score, ``ECE = sum_m (n_m / N) |acc_m - conf_m|``.
      This is the reliability diagram of P(class 1), not the multi-class "top-label" ECE.

    Args:
        labels: 0/1 labels, already checked (see :func:`check_binary_inputs`).
        scores: probabilities of class 1 in [0, 1], the same shape.
        threshold: decision threshold of the threshold-based metrics.
        n_bins: ECE bins.

    Returns:
        ``{name: (B,)}``, NaN where a metric is undefined on a row.
    """
    _check_parameters(threshold, n_bins)
    y = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    p = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] == 0:
        raise ValueError(f"labels and scores must have the same shape (B, N) with N >= 1, got {y.shape} and {p.shape}")
    n_pos, n_neg = y.sum(axis=1), (1 - y).sum(axis=1)
    from scipy.stats import rankdata  # here: scipy.stats costs ~0.5 s of every ClientApp start otherwise

    ranks = rankdata(p, axis=1)  # average ranks of tied scores
    auc_rows = _ratio((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2, n_pos * n_neg)
    pred = (p >= threshold).astype(np.float64)
    tp, fp = (pred * y).sum(axis=1), (pred * (1 - y)).sum(axis=1)
    fn, tn = n_pos - tp, n_neg - fp
    sens, spec = _ratio(tp, n_pos), _ratio(tn, n_neg)
    return {
        "auc": auc_rows,
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "ece": _ece(y, p, n_bins),
    }


# --------------------------------------------------------------------------------------------------
# One set of scores
# --------------------------------------------------------------------------------------------------


def _one(name: str, y_true: ArrayLike, y_score: ArrayLike, threshold: float, n_bins: int) -> float:
    """Metric ``name`` of :func:`row_metrics` on one checked set of scores."""
    truth, score = check_binary_inputs(y_true, y_score)
    return float(row_metrics(truth, score, threshold, n_bins)[name][0])


def auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve; ``NaN`` when only one class is present (see :func:`row_metrics`)."""
    return _one("auc", y_true, y_score, DEFAULT_THRESHOLD, DEFAULT_ECE_BINS)


def sensitivity(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Recall of class 1, TP / (TP + FN); ``NaN`` when there are no positive cases."""
    return _one("sensitivity", y_true, y_score, threshold, DEFAULT_ECE_BINS)


def specificity(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Recall of class 0, TN / (TN + FP); ``NaN`` when there are no negative cases."""
    return _one("specificity", y_true, y_score, threshold, DEFAULT_ECE_BINS)


def balanced_accuracy(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Mean of sensitivity and specificity; ``NaN`` when only one class is present."""
    return _one("balanced_accuracy", y_true, y_score, threshold, DEFAULT_ECE_BINS)


def f1(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """F1 of class 1, 2TP / (2TP + FP + FN); ``NaN`` when there are no true and no predicted positives."""
    return _one("f1", y_true, y_score, threshold, DEFAULT_ECE_BINS)


def expected_calibration_error(y_true: ArrayLike, y_score: ArrayLike, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """Expected calibration error of the positive-class probability, in [0, 1] (see :func:`row_metrics`)."""
    return _one("ece", y_true, y_score, DEFAULT_THRESHOLD, n_bins)


METRICS: Mapping[str, MetricFn] = {
    "auc": auc,
    "balanced_accuracy": balanced_accuracy,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "f1": f1,
    "ece": expected_calibration_error,
}
"""Every metric of :data:`METRIC_LABELS` as a function of one set of scores (threshold 0.5, 10 ECE bins)."""


def binary_metrics(y_true: ArrayLike, y_score: ArrayLike) -> dict[str, float]:
    """Every metric on one set of test cases (threshold 0.5, 10 ECE bins), in :data:`METRIC_LABELS` order."""
    truth, score = check_binary_inputs(y_true, y_score)
    return {name: float(values[0]) for name, values in row_metrics(truth, score).items()}


def bootstrap_all(
    y_true: ArrayLike, y_score: ArrayLike, n_resamples: int, seed: int, alpha: float = 0.05
) -> dict[str, Interval]:
    """Every metric with its percentile bootstrap interval over patients, all metrics on the same resamples.

    The point is the metric on all cases; ``low``/``high`` are the ``alpha/2`` and ``1 - alpha/2``
    percentiles over ``n_resamples`` resamples of the cases (``N`` each, with replacement, drawn at once
    from ``np.random.default_rng(seed)``; see :func:`endofed.finetune.bootstrap.seed_bootstrap`). Resamples
    where a metric is undefined are skipped; with none left (or ``n_resamples == 0``) the interval is NaN.

    Returns:
        ``{metric: (point, low, high)}``.

    Raises:
        ValueError: invalid labels, scores, resample count, seed or ``alpha``.
    """
    truth, score = check_binary_inputs(y_true, y_score)
    return seed_bootstrap(row_metrics, truth, score[None, :], n_resamples, seed, alpha)
