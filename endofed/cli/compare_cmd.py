"""``endofed compare``: run every arm of an experiment on the same test patients and write the report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from endofed.cli.common import EXIT_OK, console
from endofed.compare.spec import ARMS, load_spec

if TYPE_CHECKING:
    from endofed.compare.runner import PlannedUnit
    from endofed.compare.units import UnitResult

# The runner (torch, MONAI, Flower) is imported by the handler, so that building the parser and printing --help
# stay fast (tests/test_imports.py).


def register(commands: Any) -> None:
    """Add ``endofed compare``."""
    parser = commands.add_parser(
        "compare",
        help="run every arm (scratch, local MIM, federated MIM, pooled) and write a report",
        description=(
            "Run the arms of an experiment on the same held-out test patients of every site: single-site from "
            "scratch, single-site MIM pre-training, federated MIM (FedAvg; Flower simulation) with local or "
            "federated (FedProx) fine-tuning, and pooled training. Writes results.csv, summary.csv, plots and "
            "report.md into --out. Finished units are kept: run the same command again to resume."
        ),
    )
    parser.add_argument("--experiment", type=Path, required=True, metavar="YAML",
                        help="experiment YAML (e.g. configs/experiments/demo.yaml)")  # fmt: skip
    parser.add_argument("--sites", type=Path, nargs="+", metavar="DIR_OR_YAML",
                        help="site YAMLs or folders of site_*.yaml (replaces the experiment's 'sites')")  # fmt: skip
    parser.add_argument("--out", type=Path, help="output folder (default runs/compare/<experiment name>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (replaces the experiment's)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, help="arms to run (replaces the experiment's)")
    parser.add_argument("--app", type=Path, help="the Flower app folder (default: found from the current folder)")
    parser.add_argument("--fresh", action="store_true", help="discard finished units in --out and start again")
    parser.set_defaults(handler=run_compare)


def _print_table(summary: list[dict[str, Any]], arms: tuple[str, ...]) -> None:
    """Test AUC per site and arm (all labels), with the gain over scratch."""
    from endofed.compare.tables import ALL_SITES, fmt

    table = Table(title="test AUC [95% CI] (mean over seeds)")
    table.add_column("site")
    for arm in (a for a in ARMS if a in arms):
        table.add_column(arm, justify="right")
    rows = [r for r in summary if r["label_fraction"] == 1.0]
    for site in sorted({r["site"] for r in rows}, key=lambda s: (s == ALL_SITES, s)):
        cells = [site]
        for arm in (a for a in ARMS if a in arms):
            row = next((r for r in rows if r["site"] == site and r["arm"] == arm), None)
            if row is None:
                cells.append("—")
                continue
            gain = f"\n{fmt(row['auc_gain'], signed=True)} vs scratch" if "auc_gain" in row else ""
            cells.append(f"{fmt(row['auc_mean'])} [{fmt(row['auc_low'], 2)}, {fmt(row['auc_high'], 2)}]{gain}")
        table.add_row(*cells)
    Console(file=sys.stdout, soft_wrap=True).print(table)


def run_compare(args: argparse.Namespace) -> int:
    """Plan, run (or resume) and report."""
    from endofed.compare.report import write_outputs
    from endofed.compare.runner import plan_units, prepare, run_all
    from endofed.config import load_site_config
    from endofed.data.check import refuse_writes_into_sites
    from endofed.launch.simulation import find_app_dir, find_site_yamls

    started = time.perf_counter()
    overrides: dict[str, Any] = {}
    if args.seeds:
        overrides["seeds"] = tuple(args.seeds)
    if args.arms:
        overrides["arms"] = tuple(args.arms)
    spec = load_spec(args.experiment, overrides)
    site_yamls = find_site_yamls(args.sites) if args.sites else find_site_yamls(list(spec.sites)) if spec.sites else []
    out = (args.out or Path("runs") / "compare" / spec.name).resolve()
    app_dir = (args.app or find_app_dir(Path.cwd())).resolve()
    refuse_writes_into_sites([load_site_config(y) for y in site_yamls], [("--out", out)])
    console.print(f"checking {len(site_yamls)} sites' data ...", markup=False)
    ctx = prepare(spec, site_yamls, out, app_dir, args.fresh)
    units = plan_units(spec, [s.name for s in ctx.sites])
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(),
                  console=console) as progress:  # fmt: skip
        task = progress.add_task("compare", total=len(units))

        def before(unit: PlannedUnit) -> None:
            progress.update(task, description=f"running {unit.name}")

        def after(unit: PlannedUnit, result: UnitResult, fresh: bool) -> None:
            how = f"done in {result.seconds:.0f} s" if fresh else "already done (kept)"
            progress.console.print(f"  {unit.name}: {how}", markup=False)
            progress.advance(task)

        def federation(log: Path) -> None:
            progress.console.print(f"  federated simulation running; Flower's output: {log}", markup=False)

        results = run_all(ctx, units, after, before, federation)
        progress.update(task, description="writing the report")
        outputs = write_outputs(ctx, results, time.perf_counter() - started)
    _print_table(outputs.summary, spec.arms)
    print(f"report: {outputs.report}")
    return EXIT_OK
