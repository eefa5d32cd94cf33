"""From finished units to numbers: leakage and pairing checks, per-seed rows, and per-arm summaries.

Pure functions of :class:`endofed.compare.units.UnitResult` lists (no training, no plotting), so the
report can be rebuilt from ``unit.json`` files alone; ``endofed evaluate`` is their two-arm case. The numbers
come from the one resampling engine, :mod:`endofed.finetune.bootstrap`; :func:`format_interval` writes every
interval of the tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from endofed.compare.arms import BASELINE, arm_names
from endofed.errors import EndofedError
from endofed.finetune.bootstrap import mean_sd, paired_difference, relative_gain, seed_bootstrap
from endofed.finetune.metrics import METRIC_LABELS, row_metrics

if TYPE_CHECKING:
    from endofed.compare.units import UnitResult

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
    """One arm at one site (or all sites) and label fraction: labels ``(N,)``, probabilities ``(seeds, N)``.

    ``subjects`` names the ``N`` test patients in order (site-local ids; all sites: ``site/subject``).
    """

    site: str
    arm: str
    fraction: float
    seeds: list[int]
    labels: np.ndarray
    probs: np.ndarray
    subjects: list[str] = field(default_factory=list)


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
        gathered.append(ArmPredictions(site, arm, fraction, seeds, labels, probs, subjects))
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
        subjects = [f"{p.site}/{s}" for p in parts for s in p.subjects]
        out.append(ArmPredictions(ALL_SITES, arm, fraction, parts[0].seeds, labels, probs, subjects))
    return out


def seed_rows(gathered: Sequence[ArmPredictions], n_boot: int) -> list[dict[str, Any]]:
    """``results.csv``: one row per site, arm, label fraction and seed, each metric with its bootstrap 95% CI."""
    rows = []
    for g in gathered:
        for index, seed in enumerate(g.seeds):
            row: dict[str, Any] = {"site": g.site, "arm": g.arm, "label_fraction": g.fraction, "seed": seed,
                                   "n_test": int(g.labels.size), "n_test_positive": int(g.labels.sum())}  # fmt: skip
            for name, (value, low, high) in seed_bootstrap(row_metrics, g.labels, g.probs[index], n_boot, seed).items():
                row |= {name: value, f"{name}_low": low, f"{name}_high": high}
            rows.append(row)
    order = {a: i for i, a in enumerate(arm_names())}
    return sorted(rows, key=lambda r: (r["site"] == ALL_SITES, r["site"], r["label_fraction"] < 1, -r["label_fraction"],
                                       order.get(r["arm"], 99), r["seed"]))  # fmt: skip


def _per_seed(g: ArmPredictions) -> dict[str, np.ndarray]:
    """Every metric of each seed of an arm: ``{name: (seeds,)}``."""
    return row_metrics(np.broadcast_to(g.labels, g.probs.shape), g.probs)


def summarise(gathered: Sequence[ArmPredictions], n_boot: int, boot_seed: int = 0) -> list[dict[str, Any]]:
    """Per site, arm and fraction: metric mean +- sd over seeds, their 95% CIs, and the paired AUC gain over scratch.

    Columns: ``site``, ``arm``, ``label_fraction``, ``seeds``, ``n_test``, ``n_test_positive``, per metric
    ``{m}_mean``, ``{m}_sd``, ``{m}_low``, ``{m}_high``, and for arms with a baseline (:data:`BASELINE`, same
    seeds) ``auc_gain``, ``auc_gain_low``, ``auc_gain_high``, ``auc_gain_p`` and ``auc_relative_gain``.
    """
    index = {(g.site, g.arm, g.fraction): g for g in gathered}
    out = []
    for g in gathered:
        row: dict[str, Any] = {"site": g.site, "arm": g.arm, "label_fraction": g.fraction, "seeds": len(g.seeds),
                               "n_test": int(g.labels.size), "n_test_positive": int(g.labels.sum())}  # fmt: skip
        per_seed = _per_seed(g)
        for name, (_, low, high) in seed_bootstrap(row_metrics, g.labels, g.probs, n_boot, boot_seed).items():
            row[f"{name}_mean"], row[f"{name}_sd"] = mean_sd(list(per_seed[name]))
            row |= {f"{name}_low": low, f"{name}_high": high}
        base = index.get((g.site, BASELINE, g.fraction))
        if base is not None and g.arm != BASELINE and base.seeds == g.seeds:
            diff = paired_difference(row_metrics, g.labels, g.probs, base.probs, n_boot, boot_seed)
            row |= dict(zip(("auc_gain", "auc_gain_low", "auc_gain_high", "auc_gain_p"), diff, strict=True))
            baseline = float(np.nanmean(_per_seed(base)["auc"]))
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
    return paired_difference(row_metrics, a.labels, a.probs, b.probs, n_boot, 0)


def fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """A number for a table; ``n/a`` if undefined."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_interval(
    value: float | None, low: float | None, high: float | None, sd: float | None = None, signed: bool = False
) -> str:
    """An estimate with its interval, e.g. ``0.712 [0.551, 0.860]`` (``sd``: ``0.712 ± 0.020 [...]``)."""
    spread = "" if sd is None else f" ± {fmt(sd)}"
    return f"{fmt(value, signed=signed)}{spread} [{fmt(low, signed=signed)}, {fmt(high, signed=signed)}]"


def format_relative(value: float | None) -> str:
    """A relative gain as a signed percentage (``+33.3%``); ``—`` if undefined."""
    return "—" if value is None or not math.isfinite(value) else f"{value:+.1%}"


def format_metric(row: Mapping[str, Any], name: str, with_sd: bool = False) -> str:
    """Metric ``name`` of a :func:`summarise` row: seed mean (``± sd`` if ``with_sd``) and its 95% CI."""
    sd = row[f"{name}_sd"] if with_sd else None
    return format_interval(row[f"{name}_mean"], row[f"{name}_low"], row[f"{name}_high"], sd=sd)


def format_gain(row: Mapping[str, Any]) -> str:
    """The paired AUC gain of a :func:`summarise` row with its 95% CI and p; ``—`` without a baseline."""
    if "auc_gain" not in row:
        return "—"
    interval = format_interval(row["auc_gain"], row["auc_gain_low"], row["auc_gain_high"], signed=True)
    return f"{interval}, p={fmt(row['auc_gain_p'], 2)}"


def metric_table(summary: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> list[list[str]]:
    """Metric by arm, for one site and label fraction: a header, every metric with its CI, then the AUC gains.

    Args:
        summary: :func:`summarise` rows of one site and fraction.
        arms: the columns, in order (the first is usually :data:`BASELINE`).

    Raises:
        KeyError: an arm without a row.
    """
    rows = {r["arm"]: r for r in summary}
    columns = [rows[arm] for arm in arms]
    table = [["metric", *(f"{arm} [95% CI]" for arm in arms)]]
    table += [[label, *(format_metric(r, name) for r in columns)] for name, label in METRIC_LABELS.items()]
    table.append([f"AUC difference vs {BASELINE} (paired)", *(format_gain(r) for r in columns)])
    table.append(["AUC relative gain", *(format_relative(r.get("auc_relative_gain")) for r in columns)])
    return table
