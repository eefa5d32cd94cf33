"""Binary classification metrics with patient-level bootstrap confidence intervals.

Every function takes ``y_true`` (0/1 labels, one row = one patient) and ``y_score`` (predicted probability
of class 1, in [0, 1]). Threshold-based metrics predict positive when ``y_score >= threshold`` (0.5 by
default). Metrics come from scikit-learn where it has them; the expected calibration error is written here.

Degenerate inputs give ``NaN``, never an exception: a metric that needs both classes (AUC, balanced
accuracy) is undefined when only one class is present, sensitivity is undefined without positives,
specificity without negatives, and F1 when there are neither true nor predicted positives (0/0). The
bootstrap skips resamples on which the metric is ``NaN`` (for AUC: resamples that drew a single class) and
logs how many resamples were used; :func:`bootstrap_replicates` returns them for callers that need the count.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5

MetricFn = Callable[[ArrayLike, ArrayLike], float]
"""A metric of ``(y_true, y_score)`` returning a float (``NaN`` when undefined)."""

Interval = tuple[float, float, float]
"""``(point, low, high)``: the metric on all cases and the bootstrap percentile interval."""


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


def _is_number(value: object) -> bool:
    """Whether ``value`` is a real number (Python or numpy scalar), excluding bool."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def _is_count(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy scalar), excluding bool."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def _check_threshold(threshold: float) -> None:
    """Require a finite decision threshold in [0, 1]."""
    if not _is_number(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")


def _predict(y_true: ArrayLike, y_score: ArrayLike, threshold: float) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Validated labels and hard predictions ``y_score >= threshold``."""
    _check_threshold(threshold)
    truth, score = check_binary_inputs(y_true, y_score)
    return truth, (score >= threshold).astype(np.int64)


def _both_classes(truth: NDArray[np.int64]) -> bool:
    """Whether both 0 and 1 occur among the labels."""
    return bool(truth.min() == 0 and truth.max() == 1)


# --------------------------------------------------------------------------------------------------
# Point metrics
# --------------------------------------------------------------------------------------------------


def auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    Returns:
        The AUC, or ``NaN`` when only one class is present: the ROC curve needs both a true-positive
        rate (positives) and a false-positive rate (negatives), so AUC is undefined, not an error.
    """
    truth, score = check_binary_inputs(y_true, y_score)
    if not _both_classes(truth):
        logger.debug("AUC undefined: only class %d present in %d cases", int(truth[0]), truth.size)
        return math.nan
    return float(roc_auc_score(truth, score))


def sensitivity(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Recall of class 1, TP / (TP + FN); ``NaN`` when there are no positive cases."""
    truth, pred = _predict(y_true, y_score, threshold)
    if not truth.any():
        return math.nan
    return float(recall_score(truth, pred, pos_label=1))


def specificity(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Recall of class 0, TN / (TN + FP); ``NaN`` when there are no negative cases."""
    truth, pred = _predict(y_true, y_score, threshold)
    if truth.all():
        return math.nan
    return float(recall_score(truth, pred, pos_label=0))


def balanced_accuracy(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Mean of sensitivity and specificity (``sklearn.metrics.balanced_accuracy_score``).

    Returns:
        The balanced accuracy, or ``NaN`` when only one class is present (scikit-learn would then
        silently return the recall of the one class present, which is not a balanced accuracy).
    """
    truth, pred = _predict(y_true, y_score, threshold)
    if not _both_classes(truth):
        return math.nan
    return float(balanced_accuracy_score(truth, pred))


def f1(y_true: ArrayLike, y_score: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> float:
    """F1 of class 1, 2TP / (2TP + FP + FN); ``NaN`` when there are no true and no predicted positives."""
    truth, pred = _predict(y_true, y_score, threshold)
    return float(f1_score(truth, pred, pos_label=1, zero_division=np.nan))


def expected_calibration_error(y_true: ArrayLike, y_score: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error of the positive-class probability (binary reliability diagram).

    Definition: split [0, 1] into ``M = n_bins`` equal-width bins; case ``i`` goes to bin
    ``min(floor(p_i * M), M - 1)`` (so bins are ``[m/M, (m+1)/M)`` and the last one includes 1.0). With
    ``n_m`` cases in bin ``m``, ``acc_m`` the fraction of them with label 1 and ``conf_m`` their mean
    ``p_i``::

        ECE = sum_m (n_m / N) * |acc_m - conf_m|

    Empty bins contribute nothing. This is the reliability diagram of P(class 1), not the "top-label"
    (max-probability) ECE of multi-class papers; the two differ for scores below 0.5.

    Args:
        y_true: 0/1 labels, shape ``(N,)``.
        y_score: probability of class 1, shape ``(N,)``.
        n_bins: number of equal-width bins (>= 1).

    Returns:
        ECE in [0, 1].
    """
    if not _is_count(n_bins) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    truth, score = check_binary_inputs(y_true, y_score)
    bins = np.minimum(np.floor(score * n_bins).astype(np.int64), n_bins - 1)
    positives = np.bincount(bins, weights=truth.astype(np.float64), minlength=n_bins)
    confidence = np.bincount(bins, weights=score, minlength=n_bins)
    # (n_m / N) * |positives_m / n_m - confidence_m / n_m| = |positives_m - confidence_m| / N
    return float(np.abs(positives - confidence).sum() / truth.size)


METRICS: Mapping[str, MetricFn] = {
    "auc": auc,
    "balanced_accuracy": balanced_accuracy,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "f1": f1,
    "ece": expected_calibration_error,
}
"""Every metric reported for a classifier, by name (AUC is the primary one); thresholds at 0.5."""


def binary_metrics(y_true: ArrayLike, y_score: ArrayLike) -> dict[str, float]:
    """All metrics of :data:`METRICS` on one set of test cases (threshold 0.5, 10 ECE bins)."""
    truth, score = check_binary_inputs(y_true, y_score)
    return {name: fn(truth, score) for name, fn in METRICS.items()}


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


def _check_bootstrap_args(n_resamples: int, seed: int, alpha: float) -> None:
    """Validate the resample count, seed and significance level."""
    if not _is_count(n_resamples) or n_resamples < 0:
        raise ValueError(f"n_resamples must be an integer >= 0, got {n_resamples!r}")
    if not _is_count(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not _is_number(alpha) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _percentile_interval(values: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    """Percentile interval ``[alpha/2, 1 - alpha/2]`` (numpy's linear interpolation); NaNs if empty."""
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(values, [50.0 * alpha, 100.0 - 50.0 * alpha])
    return float(low), float(high)


def _paired_replicates(
    truth: NDArray[np.int64],
    scores: tuple[NDArray[np.float64], ...],
    metric_fn: MetricFn,
    n_resamples: int,
    seed: int,
) -> NDArray[np.float64]:
    """Metric of each score array on ``n_resamples`` case resamples shared by all arrays.

    Returns:
        Array ``(n_resamples, len(scores))``; resample ``r`` draws ``N`` case indices with replacement
        from ``np.random.default_rng(seed)``, the same indices for every score array.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, len(scores)), dtype=np.float64)
    for r in range(n_resamples):
        idx = rng.integers(0, truth.size, size=truth.size)
        out[r] = [metric_fn(truth[idx], score[idx]) for score in scores]
    return out


def bootstrap_replicates(
    y_true: ArrayLike, y_score: ArrayLike, metric_fn: MetricFn, n_resamples: int, seed: int
) -> NDArray[np.float64]:
    """The metric on each bootstrap resample of the cases, keeping only resamples where it is defined.

    Args:
        y_true: 0/1 labels, one per patient (patients are the resampling unit).
        y_score: probability of class 1 per patient.
        metric_fn: e.g. :func:`auc`; returns ``NaN`` when undefined on a resample.
        n_resamples: resamples drawn (with replacement, size ``N`` each).
        seed: seed of ``np.random.default_rng``; the same seed gives the same resamples.

    Returns:
        The finite replicates; its length is the number of resamples used (for AUC, resamples that
        drew a single class are skipped).
    """
    _check_bootstrap_args(n_resamples, seed, 0.05)
    truth, score = check_binary_inputs(y_true, y_score)
    values = _paired_replicates(truth, (score,), metric_fn, n_resamples, seed)[:, 0]
    return values[np.isfinite(values)]


def bootstrap_ci(
    y_true: ArrayLike,
    y_score: ArrayLike,
    metric_fn: MetricFn,
    n_resamples: int,
    seed: int,
    alpha: float = 0.05,
) -> Interval:
    """Percentile bootstrap confidence interval of a metric over patients.

    The point estimate is the metric on all cases. ``low``/``high`` are the ``alpha/2`` and
    ``1 - alpha/2`` percentiles of the metric over resamples of the cases (with replacement, ``N`` per
    resample, drawn from ``np.random.default_rng(seed)``). Resamples where the metric is undefined
    (``NaN``, e.g. AUC on a single-class resample) are skipped; the number used is logged at INFO.
    With ``n_resamples == 0`` (``finetune.bootstrap: 0``) or no usable resample, ``low`` and ``high``
    are ``NaN``.

    Returns:
        ``(point, low, high)``.
    """
    _check_bootstrap_args(n_resamples, seed, alpha)
    truth, score = check_binary_inputs(y_true, y_score)
    point = float(metric_fn(truth, score))
    values = bootstrap_replicates(truth, score, metric_fn, n_resamples, seed)
    name = getattr(metric_fn, "__name__", "metric")
    logger.info("bootstrap %s: %d of %d resamples used", name, values.size, n_resamples)
    low, high = _percentile_interval(values, alpha)
    return point, low, high


def bootstrap_all(
    y_true: ArrayLike, y_score: ArrayLike, n_resamples: int, seed: int, alpha: float = 0.05
) -> dict[str, Interval]:
    """:func:`bootstrap_ci` of every metric in :data:`METRICS`, each on the same resamples (same seed)."""
    return {name: bootstrap_ci(y_true, y_score, fn, n_resamples, seed, alpha) for name, fn in METRICS.items()}


def paired_bootstrap_difference(
    y_true: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    metric_fn: MetricFn,
    n_resamples: int,
    seed: int,
    alpha: float = 0.05,
) -> tuple[float, float, float, float]:
    """Paired bootstrap of ``metric(a) - metric(b)`` for two methods scored on the same patients.

    Each resample draws the same case indices for both methods, so the patient-to-patient variation
    they share cancels (e.g. "pre-trained" = a vs "from scratch" = b). Resamples where either metric
    is undefined are skipped (count logged at INFO).

    Returns:
        ``(diff, low, high, p)``: the difference on all cases; its percentile interval at level
        ``1 - alpha``; and ``p``, the fraction of used resamples whose difference is ``<= 0`` — a
        one-sided bootstrap p-value-like measure of "a is not better than b" (small = a better).
        ``low``, ``high`` and ``p`` are ``NaN`` when no resample is usable.

    Raises:
        ValueError: if labels or either score array are invalid or of different lengths.
    """
    _check_bootstrap_args(n_resamples, seed, alpha)
    truth, a = check_binary_inputs(y_true, score_a)
    _, b = check_binary_inputs(truth, score_b)
    diff = float(metric_fn(truth, a)) - float(metric_fn(truth, b))
    pairs = _paired_replicates(truth, (a, b), metric_fn, n_resamples, seed)
    deltas = pairs[:, 0] - pairs[:, 1]
    deltas = deltas[np.isfinite(deltas)]
    name = getattr(metric_fn, "__name__", "metric")
    logger.info("paired bootstrap %s: %d of %d resamples used", name, deltas.size, n_resamples)
    low, high = _percentile_interval(deltas, alpha)
    p = float(np.mean(deltas <= 0.0)) if deltas.size else math.nan
    return diff, low, high, p


def relative_improvement(new: float, baseline: float) -> float:
    """Relative improvement ``(new - baseline) / baseline``, as the seed paper reports gains over scratch.

    A fraction, not a percentage: AUC 0.55 -> 0.72 gives 0.309 ("31%"). For AUC, whose chance level is
    0.5 rather than 0, a relative figure flatters weak baselines; report the absolute values beside it.

    Raises:
        ValueError: if either value is not finite, or ``baseline <= 0`` (the ratio is meaningless).
    """
    for name, value in (("new", new), ("baseline", baseline)):
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if baseline <= 0:
        raise ValueError(f"baseline must be > 0 for a relative improvement, got {baseline!r}")
    return (new - baseline) / baseline
