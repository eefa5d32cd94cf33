"""``endofed-server``: the coordinator. Starts the SuperLink (TLS + node authentication), runs the federation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from endofed.cli.common import EXIT_OK, console, round_overrides, run_command
from endofed.config import load_server_config
from endofed.launch.deployment import run_server


def build_parser() -> argparse.ArgumentParser:
    """The ``endofed-server`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="endofed-server",
        description=(
            "Run a federation as its coordinator: start flower-superlink with TLS, SuperNode authentication and "
            "a database, register the hospitals' public keys, submit the run (federated MIM pre-training, then "
            "fine-tuning) and wait for it. Exits non-zero unless the run finished 'completed'. Create the "
            "certificates and keys first with 'endofed certs'."
        ),
    )
    parser.add_argument("--rounds", type=int, help="federated pre-training rounds (e.g. 50)")
    parser.add_argument("--finetune-rounds", type=int, help="federated fine-tuning rounds (0 = local fine-tuning)")
    parser.add_argument("--config", metavar="YAML", help="server config (see configs/server.yaml)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="experiment config override, e.g. --set federation.strategy=fedprox",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``endofed-server``."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        overrides = [*args.overrides, *round_overrides(args.rounds, args.finetune_rounds)]
        summary = run_server(load_server_config(args.config), overrides)
        console.print(f"run completed; per-site results in {summary}", markup=False)
        print(Path(summary).read_text(encoding="utf-8"))
        return EXIT_OK

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
