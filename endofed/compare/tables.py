"""From finished units to numbers: leakage and pairing checks, per-seed rows, and per-arm summaries.

Pure functions of :class:`endofed.compare.units.UnitResult` lists (no training, no plotting), so the
report can be rebuilt from ``unit.json`` files alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from endofed.compare.spec import ARMS, SCRATCH
from endofed.compare.stats import batch_metrics, mean_sd, relative_gain, seed_bootstrap, seed_bootstrap_difference
from endofed.compare.units import UnitResult
from endofed.errors import EndofedError

ALL_SITES = "all sites"


class CompareError(EndofedError):
    """The results of a comparison are inconsistent (leakage, unpaired test sets)."""


def check_units(results: Sequence[UnitResult], test_ids: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Refuse results where a held-out test patient trained anything, or arms saw different test patients.

    Args:
        results: every unit.
        test_ids: per site, every held-out test subject (labelled or not).

    Returns:
        ``units``, ``test_patients`` (per site) and ``training_subjects_checked`` (count over units).

    Raises:
        CompareError: naming the unit and the subject.
    """
    checked = 0
    expected: dict[str, list[str]] = {}
    for result in results:
        for site, subjects in [*result.pretrain_subjects.items(), *result.finetune_subjects.items()]:
            leaked = sorted(set(subjects) & set(test_ids.get(site, ())))
            if leaked:
                raise CompareError(
                    f"unit {result.name}: test patient {leaked[0]!r} of site {site!r} was used in training"
                )
            checked += len(subjects)
        for site, rows in result.predictions.items():
            ids = sorted(r["subject"] for r in rows)
            if expected.setdefault(site, ids) != ids:
                raise CompareError(
                    f"unit {result.name} predicted other test patients of site {site!r} than earlier units"
                )
            if not set(ids) <= set(test_ids.get(site, ())):
                raise CompareError(f"unit {result.name} predicted patients of site {site!r} outside its test split")
    return {
        "units": len(results),
        "test_patients": {s: len(v) for s, v in expected.items()},
        "training_subjects_checked": checked,
    }


@dataclass
class ArmPredictions:
    """One arm at one site (or all sites) and label fraction: labels ``(N,)``, probabilities ``(seeds, N)``."""

    site: str
    arm: str
    fraction: float
    seeds: list[int]
    labels: np.ndarray
    probs: np.ndarray


def gather(results: Sequence[UnitResult], arms: Sequence[str]) -> list[ArmPredictions]:
    """Predictions per (site, arm, fraction), seeds stacked in one order; plus the all-sites concatenation."""
    table: dict[tuple[str, str, float], dict[int, dict[str, tuple[int, float]]]] = {}
    for result in results:
        if result.arm not in arms:
            continue
        for site, rows in result.predictions.items():
            by_subject = {r["subject"]: (int(r["label"]), float(r["prob"])) for r in rows}
            table.setdefault((site, result.arm, result.fraction), {})[result.seed] = by_subject
    gathered = []
    for (site, arm, fraction), per_seed in table.items():
        seeds = sorted(per_seed)
        subjects = sorted(per_seed[seeds[0]])
        labels = np.array([per_seed[seeds[0]][s][0] for s in subjects])
        probs = np.array([[per_seed[seed][s][1] for s in subjects] for seed in seeds])
        gathered.append(ArmPredictions(site, arm, fraction, seeds, labels, probs))
    return gathered + _all_sites(gathered)


def _all_sites(gathered: Sequence[ArmPredictions]) -> list[ArmPredictions]:
    """Every site's test patients together, per arm and fraction (only where every site and seed is present)."""
    sites = sorted({g.site for g in gathered})
    out = []
    for arm, fraction in sorted({(g.arm, g.fraction) for g in gathered}):
        parts = [g for g in gathered if g.arm == arm and g.fraction == fraction]
        if len(parts) != len(sites) or len({tuple(p.seeds) for p in parts}) != 1:
            continue
        parts.sort(key=lambda g: g.site)
        labels = np.concatenate([p.labels for p in parts])
        probs = np.concatenate([p.probs for p in parts], axis=1)
        out.append(ArmPredictions(ALL_SITES, arm, fraction, parts[0].seeds, labels, probs))
    return out


def seed_rows(gathered: Sequence[ArmPredictions], n_boot: int) -> list[dict[str, Any]]:
    """``results.csv``: one row per site, arm, label fraction and seed, each metric with its bootstrap 95% CI."""
    rows = []
    for g in gathered:
        for index, seed in enumerate(g.seeds):
            row: dict[str, Any] = {"site": g.site, "arm": g.arm, "label_fraction": g.fraction, "seed": seed,
                                   "n_test": int(g.labels.size), "n_test_positive": int(g.labels.sum())}  # fmt: skip
            for name, (value, low, high) in seed_bootstrap(g.labels, g.probs[index], n_boot, seed).items():
                row |= {name: value, f"{name}_low": low, f"{name}_high": high}
            rows.append(row)
    order = {a: i for i, a in enumerate(ARMS)}
    return sorted(rows, key=lambda r: (r["site"] == ALL_SITES, r["site"], r["label_fraction"] < 1, -r["label_fraction"],
                                       order.get(r["arm"], 99), r["seed"]))  # fmt: skip


def _per_seed(g: ArmPredictions) -> dict[str, np.ndarray]:
    """Every metric of each seed of an arm: ``{name: (seeds,)}``."""
    return batch_metrics(np.broadcast_to(g.labels, g.probs.shape), g.probs)


def summarise(gathered: Sequence[ArmPredictions], n_boot: int, boot_seed: int = 0) -> list[dict[str, Any]]:
    """Per site, arm and fraction: metric mean +- sd over seeds, their 95% CIs, and the paired AUC gain over scratch."""
    index = {(g.site, g.arm, g.fraction): g for g in gathered}
    out = []
    for g in gathered:
        row: dict[str, Any] = {"site": g.site, "arm": g.arm, "label_fraction": g.fraction, "seeds": len(g.seeds),
                               "n_test": int(g.labels.size), "n_test_positive": int(g.labels.sum())}  # fmt: skip
        per_seed = _per_seed(g)
        for name, (_, low, high) in seed_bootstrap(g.labels, g.probs, n_boot, boot_seed).items():
            row[f"{name}_mean"], row[f"{name}_sd"] = mean_sd(list(per_seed[name]))
            row |= {f"{name}_low": low, f"{name}_high": high}
        base = index.get((g.site, SCRATCH, g.fraction))
        if base is not None and g.arm != SCRATCH and base.seeds == g.seeds:
            diff = seed_bootstrap_difference(g.labels, g.probs, base.probs, n_boot, boot_seed)
            row |= dict(zip(("auc_gain", "auc_gain_low", "auc_gain_high", "auc_gain_p"), diff, strict=True))
            baseline = float(
                np.nanmean(batch_metrics(np.broadcast_to(base.labels, base.probs.shape), base.probs)["auc"])
            )
            row["auc_relative_gain"] = relative_gain(row["auc_mean"], baseline)
        out.append(row)
    return out


def paired_gain(
    gathered: Sequence[ArmPredictions], site: str, arm: str, baseline: str, n_boot: int
) -> tuple[float, ...] | None:
    """AUC of ``arm`` minus ``baseline`` at ``site`` (all labels), with its 95% CI and p; None if either is missing."""
    index = {(g.site, g.arm, g.fraction): g for g in gathered}
    a, b = index.get((site, arm, 1.0)), index.get((site, baseline, 1.0))
    if a is None or b is None or a.seeds != b.seeds:
        return None
    return seed_bootstrap_difference(a.labels, a.probs, b.probs, n_boot, 0)


def fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """A number for a table; ``n/a`` if undefined."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
