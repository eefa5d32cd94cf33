"""``endofed-server``: the coordinator. Starts the SuperLink (TLS + node authentication), runs the federation."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from endofed.cli.common import EXIT_OK, console, round_overrides, run_command
from endofed.config import load_server_config
from endofed.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The ``endofed-server`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="endofed-server",
        description=(
            "Run a federation as its coordinator: start flower-superlink with TLS, SuperNode authentication and "
            "a database, register the hospitals' public keys, submit the run (federated MIM pre-training, then "
            "fine-tuning) and wait for it. Exits non-zero unless the run finished 'completed'. Create the "
            "certificates and keys first with 'endofed certs'. After a crash (of this machine, the SuperLink or "
            "the ServerApp), 'endofed-server --resume RUN_DIR' continues the run from its last completed round."
        ),
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        type=Path,
        help="continue the interrupted run in RUN_DIR (the server config's output_dir) from its last completed "
        "round, with the settings it was started with (no other option may be given)",
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
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="also serve 'endofed dashboard' on the run folder, on 127.0.0.1 (stopped when the run ends)",
    )
    parser.add_argument("--dashboard-port", type=int, default=8050, metavar="PORT", help="its port (default 8050)")
    return parser


@contextlib.contextmanager
def dashboard_beside(run_dir: Path, port: int | None) -> Iterator[None]:
    """Run ``endofed dashboard --run RUN_DIR`` on 127.0.0.1 while the block runs (``port=None``: not at all)."""
    if port is None:
        yield
        return
    from endofed.launch.processes import Child

    command = [sys.executable, "-m", "endofed.cli.main", "dashboard", "--run", str(run_dir), "--port", str(port)]
    dashboard = Child("dashboard", command, run_dir / "logs" / "dashboard.log", dict(os.environ))
    console.print(f"dashboard: http://127.0.0.1:{port}/ (pid {dashboard.pid})", markup=False)
    try:
        yield
    finally:
        dashboard.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``endofed-server``."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        from endofed.launch.deployment import read_launch, run_server

        overrides = [*args.overrides, *round_overrides(args.rounds, args.finetune_rounds)]
        port = args.dashboard_port if args.dashboard else None
        if args.resume is not None:
            if overrides or args.config:
                raise ConfigError("--resume takes no other option: a resumed run keeps the settings it started with")
            launch = read_launch(args.resume)
            with dashboard_beside(launch.server.output_dir, port):
                summary = run_server(launch.server, launch.overrides, resume=launch)
        else:
            server = load_server_config(args.config)
            with dashboard_beside(server.output_dir, port):
                summary = run_server(server, overrides)
        console.print(f"run completed; per-site results in {summary}", markup=False)
        print(Path(summary).read_text(encoding="utf-8"))
        return EXIT_OK

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
