"""The outputs of a comparison: ``results.csv``, ``summary.csv``, figures and ``report.md``.

Everything here is rebuilt from the finished units, so ``report.md`` always matches the numbers in the CSVs.
The report states the budgets, the protocol and the checks, and a short generated summary that says
plainly whether self-supervision and federation helped (by the paired 95% CI of the AUC gain).
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.compare.arms import BASELINE, FED_SSL, FED_SSL_FEDPROX, LOSO, arm_names, selected
from endofed.compare.plots import plot_auc, plot_label_efficiency, plot_learning_curves
from endofed.compare.runner import Context
from endofed.compare.shortcut import shortcut_lines, shortcut_rows, test_intensities
from endofed.compare.tables import (
    ALL_SITES,
    check_units,
    fmt,
    format_gain,
    format_metric,
    format_relative,
    gather,
    paired_gain,
    seed_rows,
    summarise,
)
from endofed.compare.units import UnitResult
from endofed.federated.protocol import FINETUNE, PRETRAIN, global_encoder_file
from endofed.lineage.summary import card_row, card_table

REPORT, RESULTS, SUMMARY, SHORTCUT = "report.md", "results.csv", "summary.csv", "shortcut.csv"


@dataclass
class Outputs:
    """Where the outputs went, and the per-arm summary (for the console table)."""

    report: Path
    summary: list[dict[str, Any]]
    checks: dict[str, Any]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows as CSV, columns in first-seen order (missing values empty)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_outputs(ctx: Context, results: Sequence[UnitResult], seconds: float) -> Outputs:
    """Check the units, then write the CSVs, the figures and the report."""
    spec, out = ctx.spec, ctx.out
    checks = check_units(results, {s.name: s.cohort.test_ids for s in ctx.sites})
    gathered = gather(results, spec.arms)
    write_csv(out / RESULTS, seed_rows(gathered, spec.bootstrap))
    summary = summarise(gathered, spec.bootstrap)
    write_csv(out / SUMMARY, summary)
    shortcut = shortcut_rows(gathered, test_intensities(ctx.sites))
    write_csv(out / SHORTCUT, shortcut)
    figures = {
        "AUC per arm and site": plot_auc(summary, spec.arms, out / "plots" / "auc_by_arm.png"),
        "Learning curves": plot_learning_curves(results, spec.local_epochs, out / "plots" / "learning_curves.png"),
    }
    if spec.label_fractions and any(arm.label_efficiency for arm in selected(spec.arms)):
        figures["Label efficiency"] = plot_label_efficiency(summary, out / "plots" / "label_efficiency.png")
    figures |= _previews(ctx, results)
    text = render(ctx, summary, gathered, checks, figures, seconds, shortcut)
    (out / REPORT).write_text(text, encoding="utf-8")
    return Outputs(out / REPORT, summary, checks)


def _previews(ctx: Context, results: Sequence[UnitResult]) -> dict[str, Path]:
    """Copy the first seed's reconstruction previews (local MIM per site, pooled) next to the other figures."""
    seed = ctx.spec.seeds[0]
    found = {}
    for result in results:
        source = ctx.out / "units" / result.name / "reconstruction.png"
        if result.seed == seed and result.fraction == 1.0 and source.exists():
            label = result.name.split("/", 1)[1].replace("/", "_")
            target = ctx.out / "plots" / f"reconstruction_{label}.png"
            shutil.copyfile(source, target)
            found[f"Reconstruction ({label}, seed {seed}; shows images: keep local)"] = target
    return found


def _auc_cell(row: Mapping[str, Any]) -> str:
    return format_metric(row, "auc", with_sd=row["seeds"] > 1)


def result_table(summary: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> list[str]:
    """The main table (all labels): one block of rows per site, then all sites together."""
    lines = [
        "| site | arm | test AUC [95% CI] | AUC gain vs scratch [95% CI] | relative | bal. acc. | sens. | spec. "
        "| ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [r for r in summary if r["label_fraction"] == 1.0 and r["arm"] in arms]
    order = {name: i for i, name in enumerate(arm_names())}
    for row in sorted(rows, key=lambda r: (r["site"] == ALL_SITES, r["site"], order[r["arm"]])):
        site = f"{row['site']} ({row['n_test']} test, {row['n_test_positive']} pos.)"
        cells = [site, row["arm"], _auc_cell(row), format_gain(row), format_relative(row.get("auc_relative_gain"))]
        cells += [fmt(row[f"{m}_mean"]) for m in ("balanced_accuracy", "sensitivity", "specificity", "ece")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(gain: tuple[float, ...] | None, what: str) -> str:
    """One sentence on a paired AUC gain over all sites."""
    if gain is None:
        return ""
    diff, low, high, _ = gain
    interval = f"{fmt(diff, signed=True)} AUC (95% CI {fmt(low, signed=True)} to {fmt(high, signed=True)})"
    if fmt(low) != "n/a" and low > 0:
        return f"- **{what}: helped**, {interval}; the interval excludes no effect."
    if fmt(high) != "n/a" and high < 0:
        return f"- **{what}: hurt**, {interval}; the interval excludes no effect."
    return f"- **{what}: no clear effect**, {interval}; the interval includes zero."


def generated_summary(gathered: Sequence[Any], n_boot: int, arms: Sequence[str]) -> list[str]:
    """Plain statements over all sites' test patients, from paired bootstrap CIs of the AUC gain (arms' questions)."""
    lines = []
    for arm in selected(arms):
        for baseline, what in arm.questions:
            if baseline not in arms:
                continue
            sentence = _verdict(paired_gain(gathered, ALL_SITES, arm.name, baseline, n_boot), what)
            if sentence:
                lines.append(sentence)
    return lines


def _label_table(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    arms = [arm for arm in selected() if arm.label_efficiency]
    rows = [r for r in summary if r["site"] == ALL_SITES and r["arm"] in {arm.name for arm in arms}]
    fractions = sorted({r["label_fraction"] for r in rows})
    if len(fractions) < 2:
        return []
    gained = [arm for arm in arms if arm.name != BASELINE]  # paired gain over scratch at the same labels
    header = [arm.title for arm in arms] + [f"{arm.name} - {BASELINE} (paired)" for arm in gained]
    lines = ["| labels used | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for fraction in fractions:
        found = {r["arm"]: r for r in rows if r["label_fraction"] == fraction}
        cells = ["—" if arm.name not in found else _auc_cell(found[arm.name]) for arm in arms]
        cells += ["—" if arm.name not in found else format_gain(found[arm.name]) for arm in gained]
        lines.append(f"| {fraction:.0%} | " + " | ".join(cells) + " |")
    return ["## Label efficiency (all sites, test AUC)", "", *lines, ""]


def _budget_lines(ctx: Context) -> list[str]:
    """The report's arms, budgets, model and per-site case counts."""
    spec = ctx.spec
    cfg = ctx.configs[spec.seeds[0]]
    site_lines = [
        f"| {s.name} | {len(s.pretrain_cases().cases)} | {len(s.dev_cases().cases)} | "
        f"{len(s.test_cases().cases)} ({sum(r.case.label or 0 for r in s.test_cases().cases)} pos.) |"
        for s in ctx.sites
    ]
    return [
        "## Arms and budgets",
        "",
        *[f"- `{arm.name}`: {arm.title}" for arm in selected(spec.arms)],
        "",
        f"Every arm: {spec.pretrain_epochs} MIM epochs per volume (pre-training arms) and {spec.finetune_epochs} "
        f"fine-tuning epochs per labelled volume. Federated: {spec.pretrain_rounds} FedAvg rounds + "
        f"{spec.finetune_rounds} FedProx rounds (mu {spec.proximal_mu}) of {spec.local_epochs} local epoch(s), "
        "Flower simulation engine. Fine-tuning trains one model on all of a site's labelled development cases "
        f"(no early stopping, no model selection). Model: ViT3D {cfg.model.embed_dim} wide, {cfg.model.depth} "
        f"blocks, ROI {list(cfg.data.roi_size)} voxels at {list(cfg.data.target_spacing)} mm.",
        "",
        "| site | pre-training volumes | labelled development | test patients |",
        "|---|---|---|---|",
        *site_lines,
        "",
    ]


def _check_lines(checks: Mapping[str, Any]) -> list[str]:
    """The report's leakage and pairing checks."""
    return [
        "## Checks",
        "",
        f"- No held-out test patient trained any unit ({checks['units']} units; "
        f"{checks['training_subjects_checked']} training subject uses checked, including the federated sites' "
        "own round records and the pooled arm).",
        "- Every arm predicted the same test patients at each site: "
        + ", ".join(f"{s} {n}" for s, n in checks["test_patients"].items())
        + ".",
        "",
    ]


def _card_lines(ctx: Context) -> list[str]:
    """The model card of each federated arm's encoder (verified now), one row each; nothing without federated arms."""
    units, rows = ctx.out / "units", []
    for seed in ctx.spec.seeds:
        federation = units / f"seed{seed}" / "federation"
        for file, arm in ((global_encoder_file(PRETRAIN), FED_SSL), (global_encoder_file(FINETUNE), FED_SSL_FEDPROX)):
            if arm in ctx.spec.arms and (federation / file).is_file():
                rows.append(card_row(federation / file, f"`{arm}`, seed {seed}", ctx.out))
        for checkpoint in sorted((units / f"seed{seed}" / LOSO).glob(f"*/{global_encoder_file(PRETRAIN)}")):
            site = checkpoint.parent.name.rsplit("_without_", 1)[-1]
            rows.append(card_row(checkpoint, f"`{LOSO}` at {site}, seed {seed}", ctx.out))
    if not rows:
        return []
    intro = (
        "Each federated encoder's model card (lineage: code, config, rounds, the sites' data passport hashes, "
        "privacy, metrics), its checkpoint's SHA-256 recomputed for this report (`endofed card verify`)."
    )
    return ["## Model cards of the federated encoders", "", intro, "", *card_table(rows), ""]


def render(
    ctx: Context,
    summary: Sequence[Mapping[str, Any]],
    gathered: Sequence[Any],
    checks: Mapping[str, Any],
    figures: Mapping[str, Path],
    seconds: float,
    shortcut: Sequence[Mapping[str, Any]] = (),
) -> str:
    """``report.md``."""
    spec = ctx.spec
    lines = [
        f"# endofed compare: {spec.name}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M')} in {seconds / 60:.1f} min of this command; seeds "
        f"{list(spec.seeds)}, test split seed {spec.split_seed}; {len(checks.get('test_patients', {}))} sites. "
        "Config and code version: `experiment.yaml`, `configs/`.",
        "",
        "## Summary (generated from the paired 95% CIs over all sites' test patients)",
        "",
        *generated_summary(gathered, spec.bootstrap, spec.arms),
        "",
        "## Results (all labels)",
        "",
        "AUC: mean over seeds" + (" ± sd" if len(spec.seeds) > 1 else "") + ", with a bootstrap 95% CI over "
        f"test patients ({spec.bootstrap} resamples, every seed scored on the same resample). The gain over "
        "scratch is paired (same patients, same resamples); p = share of resamples without a gain. Relative = "
        "(AUC - AUC scratch) / AUC scratch, as the seed paper reports it. Other metrics: mean over seeds, "
        "threshold 0.5; per-seed values with CIs are in `results.csv`.",
        "",
        *result_table(summary, spec.arms),
        "",
        *_label_table(summary),
        *shortcut_lines(shortcut, spec.arms),
        *_budget_lines(ctx),
        *_check_lines(checks),
        *_card_lines(ctx),
        "## Figures",
        "",
        *[f"### {title}\n\n![{title}]({path.relative_to(ctx.out)})\n" for title, path in figures.items()],
        "## Files",
        "",
        f"`{RESULTS}` (per seed), `{SUMMARY}` (per arm), `{SHORTCUT}` (the shortcut check), "
        "`units/*/unit.json` (test predictions with site-local "
        "subject ids: keep them local), `units/seed*/federation/` (Flower logs, round log, global encoders).",
        "",
    ]
    return "\n".join(lines)
