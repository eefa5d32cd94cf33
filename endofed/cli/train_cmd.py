"""``endofed pretrain``, ``endofed finetune`` and ``endofed evaluate``: single-site training and the comparison."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from endofed.cli.common import EXIT_OK, add_config_args, console
from endofed.config import load_config, load_site_config

# The training libraries (torch, MONAI) are imported by the handlers that use them, so that building the parser
# and printing --help stay fast (tests/test_imports.py).


def register(commands: Any) -> None:
    """Add the ``pretrain``, ``finetune`` and ``evaluate`` commands."""
    pretrain = commands.add_parser(
        "pretrain",
        help="pre-train the encoder on this site's data (masked image modelling)",
        description=(
            "Pre-train the MAE on every usable case of the site (labelled or not) except the held-out test "
            "patients, and save the encoder (OUT/encoder.safetensors), per-epoch metrics and a reconstruction "
            "preview. Runs the data check first."
        ),
    )
    pretrain.add_argument("--site", required=True, metavar="YAML", help="site config (see configs/sites/)")
    add_config_args(pretrain)
    pretrain.add_argument("--out", type=Path, metavar="DIR", help="output folder (default WORK_DIR/pretrain)")
    pretrain.set_defaults(handler=run_pretrain)

    finetune = commands.add_parser(
        "finetune",
        help="fine-tune and evaluate the classifier (from scratch or a pre-trained encoder)",
        description=(
            "Fine-tune one model on all labelled non-test patients and evaluate it on the held-out test "
            "patients (AUC, balanced accuracy, sensitivity, specificity, F1, ECE with bootstrap 95% CIs). "
            "Writes predictions.csv and results.json (local: subject ids)."
        ),
    )
    finetune.add_argument("--site", required=True, metavar="YAML", help="site config")
    finetune.add_argument(
        "--init", required=True, metavar="{scratch,PATH}", help="'scratch' or an encoder.safetensors (or its folder)"
    )
    add_config_args(finetune)
    finetune.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (default WORK_DIR/finetune-scratch or -pretrained)"
    )
    finetune.set_defaults(handler=run_finetune)

    evaluate = commands.add_parser(
        "evaluate",
        help="compare a pre-trained run with a from-scratch run on the same test patients",
        description="Paired comparison of two 'endofed finetune' output folders on the same test patients.",
    )
    evaluate.add_argument("--scratch", required=True, type=Path, metavar="DIR", help="finetune output (scratch)")
    evaluate.add_argument("--pretrained", required=True, type=Path, metavar="DIR", help="finetune output (pre-trained)")
    evaluate.set_defaults(handler=run_evaluate)


def _progress() -> Progress:
    """A progress bar on stderr with the latest metrics in the description."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def run_pretrain(args: argparse.Namespace) -> int:
    """``endofed pretrain``."""
    from endofed.data.check import refuse_writes_into_sites
    from endofed.federated.protocol import PRETRAIN
    from endofed.io.tensorboard import TENSORBOARD_DIR, epoch_logger
    from endofed.training.site_pretrain import pretrain_site

    site = load_site_config(args.site)
    cfg = load_config(args.config, args.overrides)
    out = args.out if args.out is not None else site.work_dir / "pretrain"
    refuse_writes_into_sites([site], [("--out", out)])
    last: dict[str, float] = {}
    board = out / TENSORBOARD_DIR if cfg.logging.tensorboard else None
    with _progress() as progress, epoch_logger(board, PRETRAIN) as to_board:
        steps = progress.add_task("steps", total=None)
        epochs = progress.add_task("epochs", total=cfg.pretrain.epochs)

        def on_step(metrics: dict[str, float]) -> None:
            progress.update(steps, advance=1, description=f"step loss {metrics['loss']:.4f}")

        def on_epoch(metrics: dict[str, float]) -> None:
            last.update(metrics)
            if to_board is not None:
                to_board(metrics)
            epoch = int(metrics["epoch"]) + 1
            progress.update(epochs, advance=1, description=f"epoch {epoch} loss {metrics['loss']:.4f}")

        path = pretrain_site(
            site, cfg, out, on_epoch=on_epoch, on_step=on_step, on_start=lambda n: progress.update(steps, total=n)
        )
    console.print(f"pre-training done: {cfg.pretrain.epochs} epochs, final loss {last['loss']:.4f}", markup=False)
    console.print(f"encoder checkpoint: {path}", markup=False)
    return EXIT_OK


def metrics_table(title: str, metrics: Mapping[str, Mapping[str, float | None]]) -> Table:
    """One arm's metrics with 95% CIs."""
    from endofed.compare.tables import format_interval
    from endofed.finetune.metrics import METRIC_LABELS

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value [95% CI]")
    for name, label in METRIC_LABELS.items():
        table.add_row(label, format_interval(metrics[name]["value"], metrics[name]["low"], metrics[name]["high"]))
    return table


def run_finetune(args: argparse.Namespace) -> int:
    """``endofed finetune``."""
    from endofed.data.check import refuse_writes_into_sites
    from endofed.federated.protocol import FINETUNE
    from endofed.io.tensorboard import TENSORBOARD_DIR, epoch_logger
    from endofed.training.site_finetune import SCRATCH, finetune_site

    site = load_site_config(args.site)
    cfg = load_config(args.config, args.overrides)
    arm = "scratch" if args.init == SCRATCH else "pretrained"
    out = args.out if args.out is not None else site.work_dir / f"finetune-{arm}"
    refuse_writes_into_sites([site], [("--out", out)])
    board = out / TENSORBOARD_DIR if cfg.logging.tensorboard else None
    with _progress() as progress, epoch_logger(board, FINETUNE) as to_board:
        task = progress.add_task("fine-tuning", total=cfg.finetune.epochs)

        def on_epoch(metrics: dict[str, float]) -> None:
            if to_board is not None:
                to_board(metrics)
            epoch = int(metrics["epoch"]) + 1
            progress.update(task, advance=1, description=f"epoch {epoch} loss {metrics['loss']:.4f}")

        results = finetune_site(site, cfg, args.init, out, on_epoch=on_epoch)
    test = f"{results['n_test']} patients, {results['n_test_positive']} positive"
    trained = f"trained on {results['n_dev']} labelled development cases"
    console.print(metrics_table(f"Held-out test ({arm}; {test}; {trained})", results["test"]))
    console.print(f"results written to {out}", markup=False)
    return EXIT_OK


def run_evaluate(args: argparse.Namespace) -> int:
    """``endofed evaluate``."""
    from endofed.compare.evaluate import PRETRAINED, evaluate_runs

    evaluation = evaluate_runs(args.scratch, args.pretrained)
    title = f"Pre-trained vs scratch: {evaluation.n_cases} test patients ({evaluation.n_positive} positive)"
    header, *rows = evaluation.table()
    table = Table(title=title)
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    p = evaluation.rows[PRETRAINED].get("auc_gain_p", math.nan)
    note = "" if not math.isfinite(p) else f"; share of resamples where pre-training did not help: {p:.3f}"
    console.print(f"paired bootstrap, {evaluation.bootstrap} resamples{note}", markup=False)
    if not evaluation.same_config:
        console.print("warning: the two runs used different configs", markup=False)
    return EXIT_OK
