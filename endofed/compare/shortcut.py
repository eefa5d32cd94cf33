"""The shortcut check of a comparison: could a model score well from a volume's mean intensity alone?

Per-volume normalisation can turn a bright lesion into a global intensity shift, and a classifier can learn
that shift instead of the lesion. For every site's held-out test patients this module scores the mean
normalised T1 and T2 (over each modality's valid voxels) as if they were predictions (AUC), and measures how
closely each arm's test scores follow the mean T1 and the mean T2 (Spearman rank correlation of the
seed-averaged probability with each). An arm whose scores track a mean intensity almost monotonically
(|rho| near 1) is explained by it, whatever its AUC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from endofed.compare.tables import ALL_SITES, ArmPredictions, fmt
from endofed.data.check import site_cache
from endofed.finetune.metrics import auc

if TYPE_CHECKING:
    from endofed.compare.units import Site

MODALITY_NAMES = ("T1", "T2")


def mean_intensities(image: np.ndarray, mask: np.ndarray) -> tuple[float, ...]:
    """Mean of each channel over its valid voxels (``NaN`` for a channel without any).

    Args:
        image: ``(C, X, Y, Z)`` normalised volume.
        mask: ``(C, X, Y, Z)`` validity masks.
    """
    means = []
    for channel in range(image.shape[0]):
        valid = mask[channel] > 0
        means.append(float(np.asarray(image[channel], dtype=np.float64)[valid].mean()) if valid.any() else np.nan)
    return tuple(means)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); ``NaN`` when either side is constant."""
    ranks = [_average_ranks(np.asarray(x, dtype=np.float64)) for x in (a, b)]
    if min(float(np.std(r)) for r in ranks) == 0.0:
        return float("nan")
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1, dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def shortcut_rows(
    gathered: Sequence[ArmPredictions], intensities: Mapping[str, Mapping[str, tuple[float, ...]]]
) -> list[dict[str, Any]]:
    """Per site: the AUC of each mean intensity, and each arm's rank correlation with it (all labels).

    Args:
        gathered: predictions per (site, arm, fraction) from :func:`endofed.compare.tables.gather`; only the
            all-labels rows of single sites are used.
        intensities: per site, per test subject, the means of :func:`mean_intensities` (T1, T2).

    Returns:
        One row per site: ``site``, ``n``, ``auc_T1``, ``auc_T2`` and ``rho_T1_<arm>``, ``rho_T2_<arm>``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for g in gathered:
        if g.site == ALL_SITES or g.fraction != 1.0 or g.site not in intensities:
            continue
        subjects = g.subjects
        means = np.array([intensities[g.site][s] for s in subjects], dtype=np.float64)  # (N, 2)
        row = rows.setdefault(g.site, {"site": g.site, "n": len(subjects)})
        score = g.probs.mean(axis=0)
        for channel, name in enumerate(MODALITY_NAMES):
            row[f"auc_{name}"] = auc(g.labels, means[:, channel])
            row[f"rho_{name}_{g.arm}"] = spearman(score, means[:, channel])
    return [rows[site] for site in sorted(rows)]


def test_intensities(sites: Sequence[Site]) -> dict[str, dict[str, tuple[float, ...]]]:
    """Per site, per labelled test patient: the mean T1 and T2 of its cached model input."""
    out: dict[str, dict[str, tuple[float, ...]]] = {}
    for site in sites:
        cache = site_cache(site.config)
        per_subject = out.setdefault(site.name, {})
        for result in site.cohort.test_cases():
            assert result.key is not None  # usable cases always have a cache entry
            entry = cache.get(result.key)
            per_subject[result.case.subject_id] = mean_intensities(entry.image, entry.mask)
    return out


def shortcut_lines(rows: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> list[str]:
    """The report's shortcut section: one table row per site."""
    if not rows:
        return []
    head = ["site", "test patients", "AUC of mean T1", "AUC of mean T2"]
    head += [f"rho {arm} (T1 / T2)" for arm in arms]
    lines = [
        "## Shortcut check (mean intensity alone)",
        "",
        "AUC of each held-out test patient's mean normalised T1 and T2 used as the score (0.5 = no information "
        "in either direction), and the Spearman rank correlation of each arm's seed-averaged test scores with "
        "the mean T1 / mean T2. An arm with |rho| near 1 ranks patients by overall brightness, not by findings.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [str(row["site"]), str(row["n"]), fmt(row.get("auc_T1")), fmt(row.get("auc_T2"))]
        cells += [f"{fmt(row.get(f'rho_T1_{arm}'), 2)} / {fmt(row.get(f'rho_T2_{arm}'), 2)}" for arm in arms]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]
