"""The resampling engine: bootstrap intervals over test patients, paired differences, relative gains.

One engine for ``endofed finetune`` (one seed), ``endofed evaluate`` (two runs) and ``endofed compare`` (arms
over several seeds). Test patients are the resampling unit: each of ``R`` resamples draws ``N`` patient
indices with replacement, all ``R`` at once from ``np.random.default_rng(seed).integers(0, N, size=(R, N))``.
Every seed (and, for a difference, both arms) is scored on the same drawn patients, and the statistic of a
resample is the mean over seeds, so an interval covers both the small test set and the training noise across
seeds. The engine is agnostic of the metrics: it takes a row-wise statistic such as
:func:`endofed.finetune.metrics.row_metrics`, ``(labels (B, N), scores (B, N)) -> {name: (B,)}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

Interval = tuple[float, float, float]
"""``(point, low, high)``: a statistic on all patients and its bootstrap percentile interval."""

Difference = tuple[float, float, float, float]
"""``(difference, low, high, p)``: a paired difference, its interval and the one-sided bootstrap p."""

RowStatistic = Callable[[NDArray[np.int64], NDArray[np.float64]], Mapping[str, NDArray[np.float64]]]
"""Named statistics of each row of ``(B, N)`` labels and scores: ``{name: (B,)}`` (NaN where undefined)."""


def _check_resampling(n_resamples: int, seed: int, alpha: float) -> None:
    """Validate the resample count, the seed and the significance level."""
    for name, value in (("n_resamples", n_resamples), ("seed", seed)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _as_seeds(labels: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Labels ``(N,)`` and scores ``(S, N)`` (one row per seed; ``(N,)`` is one seed), shapes checked."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if y.ndim != 1 or p.ndim != 2 or p.shape[1] != y.size or y.size == 0:
        raise ValueError(f"expected labels (N,) and scores (seeds, N) with N >= 1, got {y.shape} and {p.shape}")
    return y, p


def resample_indices(n_cases: int, n_resamples: int, seed: int) -> NDArray[np.int64]:
    """``(n_resamples, n_cases)`` patient indices drawn with replacement, all at once from ``default_rng(seed)``."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(n_resamples, n_cases))


def seed_mean(
    statistic: RowStatistic, labels: NDArray[np.int64], scores: NDArray[np.float64], draws: NDArray[np.int64]
) -> dict[str, NDArray[np.float64]]:
    """Per statistic, ``(R,)``: its mean over the seeds (rows of ``scores``) on each row of indices ``draws (R, N)``."""
    per_seed = [statistic(labels[draws], row[draws]) for row in scores]
    return {name: np.mean([values[name] for values in per_seed], axis=0) for name in per_seed[0]}


def percentile_interval(values: NDArray[np.float64], alpha: float = 0.05) -> tuple[float, float]:
    """The ``100 alpha/2`` and ``100 (1 - alpha/2)`` percentiles (numpy's linear interpolation) of the finite values.

    Returns:
        ``(low, high)``; NaNs when no value is finite.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def seed_bootstrap(
    statistic: RowStatistic, labels: ArrayLike, scores: ArrayLike, n_resamples: int, seed: int, alpha: float = 0.05
) -> dict[str, Interval]:
    """Every statistic as its mean over seeds, with a percentile bootstrap interval over test patients.

    Args:
        statistic: row-wise statistics, e.g. :func:`endofed.finetune.metrics.row_metrics`.
        labels: ``(N,)`` 0/1 labels of the test patients.
        scores: ``(S, N)`` probabilities, one row per training seed (or ``(N,)`` for one seed).
        n_resamples: bootstrap resamples (0: no interval).
        seed: seed of the resampling.
        alpha: the interval's level is ``1 - alpha``.

    Returns:
        ``{name: (point, low, high)}``: the seed mean on all patients and the percentile interval over the
        resamples where the statistic is defined (e.g. AUC skips resamples that drew one class only).
    """
    _check_resampling(n_resamples, seed, alpha)
    y, p = _as_seeds(labels, scores)
    point = seed_mean(statistic, y, p, np.arange(y.size)[None, :])
    resampled = seed_mean(statistic, y, p, resample_indices(y.size, n_resamples, seed))
    for name, values in resampled.items():
        logger.debug("bootstrap %s: %d of %d resamples used", name, int(np.isfinite(values).sum()), n_resamples)
    return {name: (float(point[name][0]), *percentile_interval(resampled[name], alpha)) for name in point}


def paired_difference(
    statistic: RowStatistic,
    labels: ArrayLike,
    scores: ArrayLike,
    baseline: ArrayLike,
    n_resamples: int,
    seed: int,
    name: str = "auc",
    alpha: float = 0.05,
) -> Difference:
    """Paired bootstrap of ``stat(scores) - stat(baseline)`` (seed means) on the same test patients.

    Each resample draws the patients once and scores every seed of both arms on them, so the variation from
    which patients were drawn cancels. ``p`` is the share of usable resamples whose difference is ``<= 0``:
    a one-sided bootstrap measure of "no improvement" (small = ``scores`` better); NaN without resamples.

    Args:
        statistic: row-wise statistics, e.g. :func:`endofed.finetune.metrics.row_metrics`.
        labels: ``(N,)`` 0/1 labels of the test patients.
        scores: ``(S, N)`` probabilities of the arm, one row per seed (or ``(N,)``).
        baseline: ``(S', N)`` probabilities of the arm compared with (or ``(N,)``).
        n_resamples: bootstrap resamples (0: no interval, p is NaN).
        seed: seed of the resampling.
        name: the statistic compared.
        alpha: the interval's level is ``1 - alpha``.

    Returns:
        ``(difference, low, high, p)``.
    """
    _check_resampling(n_resamples, seed, alpha)
    y, a = _as_seeds(labels, scores)
    _, b = _as_seeds(labels, baseline)
    everyone, draws = np.arange(y.size)[None, :], resample_indices(y.size, n_resamples, seed)
    point = float(seed_mean(statistic, y, a, everyone)[name][0] - seed_mean(statistic, y, b, everyone)[name][0])
    diffs = seed_mean(statistic, y, a, draws)[name] - seed_mean(statistic, y, b, draws)[name]
    finite = diffs[np.isfinite(diffs)]
    p = float(np.mean(finite <= 0)) if finite.size else math.nan
    return (point, *percentile_interval(diffs, alpha), p)


def relative_gain(value: float, baseline: float) -> float:
    """``(value - baseline) / baseline``, the relative improvement the seed paper reports; NaN if undefined.

    A fraction, not a percentage: AUC 0.55 -> 0.72 gives 0.309 ("+30.9%"). Undefined (NaN) when either value
    is not finite or ``baseline <= 0``. For AUC, whose chance level is 0.5 rather than 0, a relative figure
    flatters weak baselines: report the absolute values beside it.
    """
    if not (math.isfinite(value) and math.isfinite(baseline)) or baseline <= 0:
        return math.nan
    return (value - baseline) / baseline


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values; NaNs if none."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
