"""Figures of a comparison (matplotlib, Agg): AUC per arm and site, learning curves, label efficiency."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from endofed.compare.arms import arm_names, get_arm, selected  # noqa: E402
from endofed.compare.tables import ALL_SITES  # noqa: E402
from endofed.compare.units import UnitResult  # noqa: E402
from endofed.io.figures import save_figure  # noqa: E402


def _finite(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else math.nan


def plot_auc(summary: Sequence[Mapping[str, Any]], arms: Sequence[str], path: Path) -> Path:
    """Test AUC (mean over seeds) with its bootstrap 95% CI, per site and arm (all labels)."""
    rows = [r for r in summary if r["label_fraction"] == 1.0 and r["arm"] in arms]
    sites = sorted({r["site"] for r in rows}, key=lambda s: (s == ALL_SITES, s))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(sites), 4.2))
    width = 0.8 / max(1, len(arms))
    for k, arm in enumerate(selected(arms)):
        xs, ys, lows, highs = [], [], [], []
        for i, site in enumerate(sites):
            row = next((r for r in rows if r["site"] == site and r["arm"] == arm.name), None)
            if row is None:
                continue
            value = _finite(row["auc_mean"])
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(value)
            lows.append(max(0.0, value - _finite(row["auc_low"])))
            highs.append(max(0.0, _finite(row["auc_high"]) - value))
        ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o", capsize=3, color=arm.colour, label=arm.title)
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    ax.set_xticks(range(len(sites)), sites)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test AUC (mean over seeds, 95% CI)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Endometriosis classification on held-out test patients")
    return _save(fig, path)


def plot_learning_curves(results: Sequence[UnitResult], local_epochs: int, path: Path) -> Path:
    """Training loss per epoch of the first seed: MIM pre-training (left) and fine-tuning (right)."""
    seed = min((r.seed for r in results), default=0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        if result.seed != seed or result.fraction != 1.0 or result.arm not in arm_names():
            continue  # (units that are no arm's own, e.g. the leave-one-site-out federations, are not drawn)
        colour = get_arm(result.arm).colour
        for name, history in result.history.items():
            phase, _, site = name.partition("/")
            ax = axes[0] if phase == "pretrain" else axes[1]
            if history and "round" in history[0]:  # federated rounds: one point per round
                xs = [h["round"] * local_epochs for h in history]
                style, label = "-", f"federated ({site})"
            else:
                xs = list(range(1, len(history) + 1))
                unit_site = result.name.rsplit("/", 1)[-1]
                style, label = "--", f"{result.arm} ({unit_site})"
            ax.plot(xs, [_finite(h["loss"]) for h in history], style, color=colour, alpha=0.7, label=label)
    for ax, title in zip(axes, ("MIM pre-training loss", "fine-tuning loss (cross-entropy)"), strict=True):
        ax.set_title(f"{title}, seed {seed}")
        ax.set_xlabel("epochs per volume")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def plot_label_efficiency(summary: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """AUC over all sites' test patients vs the share of labels used, for the arms with label-efficiency runs."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for arm in (a for a in selected() if a.label_efficiency):
        rows = sorted(
            (r for r in summary if r["site"] == ALL_SITES and r["arm"] == arm.name), key=lambda r: r["label_fraction"]
        )
        if not rows:
            continue
        xs = [r["label_fraction"] for r in rows]
        ax.plot(xs, [_finite(r["auc_mean"]) for r in rows], "o-", color=arm.colour, label=arm.title)
        ax.fill_between(xs, [_finite(r["auc_low"]) for r in rows], [_finite(r["auc_high"]) for r in rows],
                        color=arm.colour, alpha=0.15)  # fmt: skip
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    ax.set_xlabel("share of each site's labelled development cases used for fine-tuning")
    ax.set_ylabel("test AUC, all sites (95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    return save_figure(fig, path)
