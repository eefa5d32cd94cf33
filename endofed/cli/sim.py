"""``endofed-sim``: run the federation on one machine with Flower's simulation engine (one process per site)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from endofed.cli.common import EXIT_OK, add_config_args, console, round_overrides, run_command

DEFAULT_CONFIG = "configs/tiny.yaml"


def build_parser() -> argparse.ArgumentParser:
    """The ``endofed-sim`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="endofed-sim",
        description=(
            "Simulate the federation on this machine: the same ServerApp and ClientApp as a real deployment, "
            "under Flower's simulation engine (Ray). Simulated site k reads site YAML k. Prints every site's "
            "test metrics at the end; exits non-zero unless the run finished 'completed'."
        ),
    )
    parser.add_argument(
        "--sites",
        nargs="+",
        type=Path,
        required=True,
        metavar="DIR_OR_YAML",
        help="site YAMLs, or folders holding site_*.yaml (e.g. the output of endofed synth)",
    )
    parser.add_argument("--rounds", type=int, help="federated pre-training rounds (federation.pretrain_rounds)")
    parser.add_argument("--finetune-rounds", type=int, help="federated fine-tuning rounds (0 = local fine-tuning)")
    add_config_args(parser)
    parser.add_argument("--out", type=Path, default=Path("runs/sim"), help="output folder (default runs/sim)")
    parser.add_argument("--app", type=Path, help="the Flower app folder (default: found from the current folder)")
    parser.add_argument("--cpus-per-site", type=float, default=1.0, help="CPU share of each simulated site")
    parser.add_argument("--gpus-per-site", type=float, default=0.0, help="GPU share of each simulated site (e.g. 1.0)")
    parser.add_argument(
        "--object-store-mb",
        type=int,
        default=None,
        metavar="MB",
        help="bound on Ray's shared-memory object store, which holds the messages in flight (default 2048; "
        "0 = Ray's default, 30%% of RAM); beyond it Ray spills to disk: slower, server memory stays flat",
    )
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no Flower output on the console (it still goes to "
                        "OUT/logs/flwr-run.log); for logs and scheduled jobs")  # fmt: skip
    return parser


def _number(value: Any, width: int) -> str:
    """A metric right-aligned with 3 decimals, or n/a when undefined (e.g. AUC with one class in the test set)."""
    if value is None or value != value:
        return "n/a".rjust(width)
    return f"{float(value):{width}.3f}"


def _print_summary(summary: dict[str, Any]) -> None:
    """Per-site test metrics as a small table on stdout."""
    print(f"{'site':16s} {'n test':>6s} {'AUC':>6s} {'bal.acc':>8s} {'sens':>6s} {'spec':>6s}")
    for metrics in sorted(summary["sites"].values(), key=lambda m: str(m.get("site", ""))):
        row = [f"{str(metrics.get('site', '?')):16s}", f"{int(metrics.get('num-examples', 0)):6d}"]
        row += [
            _number(metrics.get(k), w)
            for k, w in (("auc", 6), ("balanced_accuracy", 8), ("sensitivity", 6), ("specificity", 6))
        ]
        print(" ".join(row))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``endofed-sim``."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        from endofed.cli.progress import phases_left, round_bar
        from endofed.config import load_config, load_site_config
        from endofed.data.check import refuse_writes_into_sites
        from endofed.federated.protocol import RUN_LOG
        from endofed.launch.simulation import (
            DEFAULT_OBJECT_STORE_MB,
            SimulationRequest,
            find_app_dir,
            find_site_yamls,
            run_simulation,
        )

        overrides = [*args.overrides, *round_overrides(args.rounds, args.finetune_rounds)]
        app_dir = (args.app or find_app_dir(Path.cwd())).resolve()
        config = Path(args.config) if args.config else app_dir / DEFAULT_CONFIG
        site_yamls = find_site_yamls(args.sites)
        refuse_writes_into_sites([load_site_config(y) for y in site_yamls], [("--out", args.out)])
        fed = load_config(config, overrides).federation  # a bad config: one line here, before anything starts
        with round_bar(phases_left(fed.pretrain_rounds, fed.finetune_rounds), quiet=args.quiet) as on_round:
            request = SimulationRequest(
                app_dir, site_yamls, config, overrides, args.out, args.cpus_per_site, args.gpus_per_site,
                log=args.out.resolve() / "logs" / RUN_LOG if args.quiet else None, on_round=on_round,
                object_store_mb=DEFAULT_OBJECT_STORE_MB if args.object_store_mb is None else args.object_store_mb,
            )  # fmt: skip
            summary = run_simulation(request)
        _print_summary(summary)
        console.print(f"checkpoints, rounds.jsonl and summary.json in {args.out}", markup=False)
        return EXIT_OK

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
