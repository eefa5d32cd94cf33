"""Statistics of a comparison over seeds and test patients (pure numpy, hand-checked in the tests).

A site's test patients are the same for every arm and seed, so arms are compared **paired**: each bootstrap
resample draws test patients once (with replacement) and scores every seed of both arms on that same draw.
The statistic of a resample is the mean over seeds, so the interval covers both the uncertainty from the
small test set and the training noise across seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

Interval = tuple[float, float, float]

THRESHOLD, ECE_BINS = 0.5, 10  # as endofed.finetune.metrics


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of the finite values; NaNs if none."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    """``num / den`` with NaN where ``den`` is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def batch_metrics(labels: ArrayLike, probs: ArrayLike) -> dict[str, NDArray[np.float64]]:
    """Every metric of :data:`endofed.finetune.metrics.METRICS` for each row of ``(B, N)`` labels and scores.

    The same definitions (threshold 0.5, AUC with tied scores counted half, 10-bin ECE of P(class 1)), NaN
    where a metric is undefined, vectorised over rows so that thousands of bootstrap resamples take
    milliseconds. Returns ``{name: (B,)}``.
    """
    y = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if y.shape != p.shape:
        raise ValueError(f"labels and scores must have the same shape, got {y.shape} and {p.shape}")
    n_pos, n_neg = y.sum(axis=1), (1 - y).sum(axis=1)
    ranks = rankdata(p, axis=1)  # average ranks of tied scores: the Mann-Whitney form of the AUC
    auc = _ratio((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2, n_pos * n_neg)
    pred = (p >= THRESHOLD).astype(np.float64)
    tp, fp = (pred * y).sum(axis=1), (pred * (1 - y)).sum(axis=1)
    fn, tn = n_pos - tp, n_neg - fp
    sens, spec = _ratio(tp, n_pos), _ratio(tn, n_neg)
    rows, width = p.shape
    bins = np.minimum(np.floor(p * ECE_BINS).astype(np.int64), ECE_BINS - 1) + ECE_BINS * np.arange(rows)[:, None]
    gap = np.bincount(bins.ravel(), weights=(y - p).ravel(), minlength=rows * ECE_BINS).reshape(rows, ECE_BINS)
    return {
        "auc": auc,
        "balanced_accuracy": (sens + spec) / 2,
        "sensitivity": sens,
        "specificity": spec,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "ece": np.abs(gap).sum(axis=1) / width,
    }


def _as_seeds(labels: ArrayLike, probs: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Labels ``(N,)`` and probabilities ``(S, N)`` (one row per seed), checked."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if y.ndim != 1 or p.ndim != 2 or p.shape[1] != y.size or y.size == 0:
        raise ValueError(f"expected labels (N,) and probabilities (seeds, N), got {y.shape} and {p.shape}")
    return y, p


def _seed_means(
    y: NDArray[np.int64], p: NDArray[np.float64], draws: NDArray[np.int64]
) -> dict[str, NDArray[np.float64]]:
    """Per metric, ``(R,)`` mean over seeds of the metric on each row of patient indices ``draws (R, N)``."""
    per_seed = [batch_metrics(y[draws], row[draws]) for row in p]
    return {name: np.mean([m[name] for m in per_seed], axis=0) for name in per_seed[0]}


def _resamples(n_cases: int, n_resamples: int, seed: int) -> NDArray[np.int64]:
    """``(n_resamples, n_cases)`` indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(n_resamples, n_cases))


def _interval(values: NDArray[np.float64]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the finite values (NaNs if none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def seed_bootstrap(labels: ArrayLike, probs: ArrayLike, n_resamples: int, seed: int) -> dict[str, Interval]:
    """Every metric as its mean over seeds, with a bootstrap 95% CI over test patients.

    Args:
        labels: ``(N,)`` 0/1 labels of the test patients.
        probs: ``(S, N)`` probabilities, one row per training seed (or ``(N,)`` for one seed).
        n_resamples: bootstrap resamples (0: no interval).
        seed: seed of the resampling.

    Returns:
        ``{metric: (point, low, high)}``: the seed-mean metric on all patients and the percentile interval
        over resamples (resamples where a metric is undefined, e.g. AUC on one class, are skipped).
    """
    y, p = _as_seeds(labels, probs)
    point = _seed_means(y, p, np.arange(y.size)[None, :])
    resampled = _seed_means(y, p, _resamples(y.size, n_resamples, seed))
    return {name: (float(point[name][0]), *_interval(resampled[name])) for name in point}


def seed_bootstrap_difference(
    labels: ArrayLike, probs: ArrayLike, baseline: ArrayLike, n_resamples: int, seed: int, metric: str = "auc"
) -> tuple[float, float, float, float]:
    """Paired difference ``metric(probs) - metric(baseline)`` (seed means), its 95% CI and a one-sided p.

    Both arms are scored on the same resampled patients. ``p`` is the share of resamples where the
    difference is <= 0 (no improvement); NaN without resamples.

    Returns:
        ``(difference, low, high, p)``.
    """
    y, a = _as_seeds(labels, probs)
    _, b = _as_seeds(labels, baseline)
    everyone, draws = np.arange(y.size)[None, :], _resamples(y.size, n_resamples, seed)
    point = float(_seed_means(y, a, everyone)[metric][0] - _seed_means(y, b, everyone)[metric][0])
    diffs = _seed_means(y, a, draws)[metric] - _seed_means(y, b, draws)[metric]
    finite = diffs[np.isfinite(diffs)]
    p = float(np.mean(finite <= 0)) if finite.size else math.nan
    return (point, *_interval(diffs), p)


def relative_gain(value: float, baseline: float) -> float:
    """``(value - baseline) / baseline``, the seed paper's relative improvement; NaN if undefined."""
    if not (math.isfinite(value) and math.isfinite(baseline)) or baseline <= 0:
        return math.nan
    return (value - baseline) / baseline
