"""``endofed-server``: the coordinator. Starts the SuperLink (TLS + node authentication), runs the federation."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from endofed.cli.common import EXIT_OK, console, round_overrides, run_command
from endofed.cli.dashboard_cmd import TOKEN_ENV
from endofed.config import load_server_config
from endofed.errors import ConfigError
from endofed.federated.protocol import STATE_FILE


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
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no Flower output on the console (it still goes to "
                        "RUN_DIR/logs/flwr-run.log); for logs and services")  # fmt: skip
    return parser


def _saved_round(run_dir: Path) -> tuple[str, int] | None:
    """The (phase, round) a resumed run continues after, for the progress bar.

    ``None`` if it cannot be read: the resume's own checks then say why.
    """
    from endofed.io.checkpoint import read_metadata

    try:
        meta = read_metadata(run_dir / STATE_FILE) or {}
        return str(meta["phase"]), int(meta["round"])
    except Exception:  # noqa: BLE001 (only the bar's total depends on it)
        return None


def dashboard_token(token_file: Path | None) -> str:
    """The dashboard token from the server config's ``dashboard_token_file`` ('' without one).

    Raises:
        ConfigError: the file cannot be read or holds no token.
    """
    if token_file is None:
        return ""
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"dashboard_token_file {token_file} cannot be read: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"dashboard_token_file {token_file} is empty")
    return token


@contextlib.contextmanager
def dashboard_beside(run_dir: Path, port: int | None, host: str = "127.0.0.1", token: str = "") -> Iterator[None]:
    """Run ``endofed dashboard --run RUN_DIR`` while the block runs (``port=None``: not at all).

    The token travels in the child's environment, not on its command line (process listings show that).
    """
    if port is None:
        yield
        return
    from endofed.dashboard.app import check_binding
    from endofed.launch.processes import Child

    try:
        check_binding(host, token)
    except ValueError:
        raise ConfigError(
            f"dashboard_host {host} (beyond 127.0.0.1) needs dashboard_token_file in the server config"
        ) from None
    command = [sys.executable, "-m", "endofed.cli.main", "dashboard", "--run", str(run_dir), "--host", host,
               "--port", str(port)]  # fmt: skip
    env = {**os.environ, TOKEN_ENV: token} if token else dict(os.environ)
    dashboard = Child("dashboard", command, run_dir / "logs" / "dashboard.log", env)
    console.print(f"dashboard: http://{host}:{port}/ (pid {dashboard.pid})", markup=False)
    try:
        yield
    finally:
        dashboard.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``endofed-server``."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        from endofed.cli.progress import phases_left, round_bar
        from endofed.config import load_config
        from endofed.launch.deployment import run_server
        from endofed.launch.run_record import read_launch

        overrides = [*args.overrides, *round_overrides(args.rounds, args.finetune_rounds)]
        port = args.dashboard_port if args.dashboard else None
        if args.resume is not None:
            if overrides or args.config:
                raise ConfigError("--resume takes no other option: a resumed run keeps the settings it started with")
            launch = read_launch(args.resume)
            fed = load_config(launch.server.experiment, [*launch.server.overrides, *launch.overrides]).federation
            phases = phases_left(fed.pretrain_rounds, fed.finetune_rounds, _saved_round(args.resume))
            beside = dashboard_beside(launch.server.output_dir, port, launch.server.dashboard_host,
                                      dashboard_token(launch.server.dashboard_token_file) if port else "")  # fmt: skip
            with beside, round_bar(phases, args.quiet) as on_round:
                summary = run_server(launch.server, launch.overrides, launch, on_round, quiet=args.quiet)
        else:
            server = load_server_config(args.config)
            fed = load_config(server.experiment, [*server.overrides, *overrides]).federation
            phases = phases_left(fed.pretrain_rounds, fed.finetune_rounds)
            beside = dashboard_beside(server.output_dir, port, server.dashboard_host,
                                      dashboard_token(server.dashboard_token_file) if port else "")  # fmt: skip
            with beside, round_bar(phases, args.quiet) as on_round:
                summary = run_server(server, overrides, on_round=on_round, quiet=args.quiet)
        console.print(f"run completed; per-site results in {summary}", markup=False)
        print(Path(summary).read_text(encoding="utf-8"))
        return EXIT_OK

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
