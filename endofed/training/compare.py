"""Compare a pre-trained arm with the from-scratch arm on the same held-out test patients.

Both runs of :func:`endofed.training.site_finetune.finetune_site` predicted the same test patients, so the
comparison is paired: per-arm metrics with bootstrap 95% CIs (the same resamples for both arms), the AUC
difference with a paired bootstrap CI, and the relative improvement over scratch as the seed paper reports it
(``(pretrained - scratch) / scratch``; for AUC read it beside the absolute values, see
:func:`endofed.finetune.metrics.relative_improvement`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endofed.finetune.metrics import METRICS, auc, bootstrap_all, paired_bootstrap_difference, relative_improvement
from endofed.training.records import Prediction, ResultsError, read_predictions, read_results

LOGGER = logging.getLogger(__name__)
METRIC_LABELS = {
    "auc": "AUC",
    "balanced_accuracy": "balanced accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "f1": "F1",
    "ece": "ECE (lower is better)",
}
HIGHER_IS_BETTER = ("auc", "balanced_accuracy", "sensitivity", "specificity", "f1")
DEFAULT_BOOTSTRAP = 1000


def _test_predictions(run_dir: Path) -> dict[str, Prediction]:
    """The test-split predictions of a run, by subject id."""
    rows = [r for r in read_predictions(run_dir) if r.split == "test"]
    if not rows:
        raise ResultsError(f"{run_dir} has no test predictions")
    by_id = {r.subject_id: r for r in rows}
    if len(by_id) != len(rows):
        raise ResultsError(f"{run_dir} has duplicate test predictions for a patient")
    return by_id


def _paired(scratch_dir: Path, pretrained_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Subject ids, labels and both arms' probabilities on the shared test patients (same order)."""
    scratch, pretrained = _test_predictions(scratch_dir), _test_predictions(pretrained_dir)
    if set(scratch) != set(pretrained):
        only = sorted(set(scratch) ^ set(pretrained))
        raise ResultsError(
            f"the two runs were evaluated on different patients ({len(scratch)} vs {len(pretrained)} test "
            f"patients, {len(only)} not in both, e.g. {only[0]!r}): run both with the same site and config"
        )
    ids = sorted(scratch)
    differ = [s for s in ids if scratch[s].label != pretrained[s].label]
    if differ:
        raise ResultsError(f"the two runs disagree on the label of {len(differ)} test patient(s), e.g. {differ[0]!r}")
    labels = np.array([scratch[s].label for s in ids])
    return ids, labels, np.array([scratch[s].prob for s in ids]), np.array([pretrained[s].prob for s in ids])


def _check_arms(scratch: Mapping[str, Any], pretrained: Mapping[str, Any]) -> None:
    """Refuse swapped arms; warn when the two runs used different configs."""
    if scratch.get("init") != "scratch":
        raise ResultsError(f"--scratch must be a run fine-tuned from scratch, got init {scratch.get('init')!r}")
    if pretrained.get("init") == "scratch":
        raise ResultsError("--pretrained must be a run fine-tuned from a pre-trained encoder, got init 'scratch'")
    if scratch.get("config_hash") != pretrained.get("config_hash"):
        LOGGER.warning("the two runs used different configs: the comparison is not like for like")


def _relative(new: float, baseline: float) -> float | None:
    """Relative improvement, or ``None`` where undefined (non-finite values, baseline <= 0)."""
    if not (math.isfinite(new) and math.isfinite(baseline)) or baseline <= 0:
        return None
    return relative_improvement(new, baseline)


def _interval_dict(intervals: Mapping[str, tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    """``{name: (value, low, high)}`` -> ``{name: {value, low, high}}``."""
    return {name: {"value": v, "low": lo, "high": hi} for name, (v, lo, hi) in intervals.items()}


def compare_results(scratch_dir: Path, pretrained_dir: Path) -> dict[str, Any]:
    """Paired comparison of the two arms' test predictions.

    Args:
        scratch_dir: output folder of ``finetune_site(..., init="scratch")``.
        pretrained_dir: output folder of ``finetune_site(..., init=<encoder>)``.

    Returns:
        ``n_cases``, ``n_positive``, ``bootstrap``, ``seed``, ``same_config``, ``scratch`` and ``pretrained``
        (``{metric: {value, low, high}}``), ``auc_difference`` (``{value, low, high, p}``: pretrained minus
        scratch, paired bootstrap; ``p`` = share of resamples where pre-training did not help) and
        ``relative_improvement`` (``{metric: fraction or None}``, higher-is-better metrics only).

    Raises:
        ResultsError: a folder or file is missing or malformed, the arms are swapped, or the runs were
            evaluated on different patients or labels.
    """
    scratch_meta, pretrained_meta = read_results(scratch_dir), read_results(pretrained_dir)
    _check_arms(scratch_meta, pretrained_meta)
    _, labels, p_scratch, p_pretrained = _paired(Path(scratch_dir), Path(pretrained_dir))
    n_boot = int(pretrained_meta.get("bootstrap", DEFAULT_BOOTSTRAP))
    seed = int(pretrained_meta.get("seed", 0))
    per_arm = {
        "scratch": _interval_dict(bootstrap_all(labels, p_scratch, n_boot, seed)),
        "pretrained": _interval_dict(bootstrap_all(labels, p_pretrained, n_boot, seed)),
    }
    diff, low, high, p = paired_bootstrap_difference(labels, p_pretrained, p_scratch, auc, n_boot, seed)
    relative = {
        name: _relative(per_arm["pretrained"][name]["value"], per_arm["scratch"][name]["value"])
        for name in HIGHER_IS_BETTER
    }
    return {
        "n_cases": int(labels.size),
        "n_positive": int(labels.sum()),
        "bootstrap": n_boot,
        "seed": seed,
        "same_config": scratch_meta.get("config_hash") == pretrained_meta.get("config_hash"),
        **per_arm,
        "auc_difference": {"value": diff, "low": low, "high": high, "p": p},
        "relative_improvement": relative,
    }


def format_interval(entry: Mapping[str, float | None]) -> str:
    """``0.712 [0.551, 0.860]``; ``n/a`` for undefined values (``None`` or NaN)."""

    def number(value: float | None) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"

    return f"{number(entry['value'])} [{number(entry['low'])}, {number(entry['high'])}]"


def comparison_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Table rows ``(metric, scratch, pretrained)`` with 95% CIs, then the AUC difference and gains."""
    rows = [
        (
            METRIC_LABELS.get(name, name),
            format_interval(result["scratch"][name]),
            format_interval(result["pretrained"][name]),
        )
        for name in METRICS
    ]
    rows.append(("AUC difference (paired)", "", format_interval(result["auc_difference"])))
    gain = result["relative_improvement"].get("auc")
    rows.append(("AUC relative improvement", "", "n/a" if gain is None else f"{gain:+.1%}"))
    return rows


def format_comparison(result: Mapping[str, Any]) -> str:
    """The comparison as a plain-text table (for logs and benchmarks; the CLI draws its own)."""
    header = ("metric", "scratch [95% CI]", "pretrained [95% CI]")
    rows: Sequence[tuple[str, str, str]] = [header, *comparison_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"{result['n_cases']} test patients ({result['n_positive']} positive), {result['bootstrap']} resamples"
    )
    return "\n".join(lines)
