"""``endofed dashboard --run RUN_DIR``: serve the run dashboard (status, sites, rounds, plots, DP, passports)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from endofed.cli.common import EXIT_OK
from endofed.errors import ConfigError

TOKEN_ENV = "ENDOFED_DASHBOARD_TOKEN"  # the token without putting it on the command line (process listings)


def register(commands: Any) -> None:
    """Add the ``dashboard`` command."""
    parser = commands.add_parser(
        "dashboard",
        help="serve a web dashboard of a run folder (finished or live)",
        description=(
            "Serve a web dashboard of a federated run's folder (what endofed-server or endofed-sim wrote): run "
            "status and phase, the round timeline, a per-site table, loss and bytes plots, DP epsilon and the "
            "sites' data passports. It re-reads the folder on every request and refreshes while the run is live. "
            "Binds to 127.0.0.1; binding to any other address needs --token (or $" + TOKEN_ENV + "), which every "
            "page then checks (open http://HOST:PORT/?token=TOKEN)."
        ),
    )
    parser.add_argument("--run", required=True, type=Path, metavar="RUN_DIR", help="the run's output folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    parser.add_argument("--token", default=None, help=f"access token (default: ${TOKEN_ENV}; needed beyond loopback)")
    parser.add_argument(
        "--sites",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR_OR_YAML",
        help="simulation: the site YAMLs (or their folder) to name simulated sites and show their passports "
        "(default: the ones the run was submitted with, if its SuperLink database has them)",
    )
    parser.add_argument("--refresh", type=int, default=5, metavar="S", help="live page refresh period (default 5 s)")
    parser.set_defaults(handler=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    """Check the options, then serve until interrupted."""
    from endofed.dashboard.app import DashboardSettings, check_binding, serve
    from endofed.launch.simulation import find_site_yamls

    if not args.run.is_dir():
        raise ConfigError(f"--run: no such run folder: {args.run}")
    if not 0 < args.port < 65536 or args.refresh < 1:
        raise ConfigError(f"--port must be in 1..65535 and --refresh >= 1, got {args.port} and {args.refresh}")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    check_binding(args.host, token)
    sites = find_site_yamls(args.sites) if args.sites else []
    settings = DashboardSettings(args.run, sites, token, args.refresh)
    print(f"endofed dashboard: http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    serve(settings, args.host, args.port)
    return EXIT_OK
