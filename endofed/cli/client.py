"""``endofed-client``: a hospital joins the federation (data check first, then its SuperNode)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from endofed.cli.common import add_config_args, run_command
from endofed.config import load_config, load_site_config


def build_parser() -> argparse.ArgumentParser:
    """The ``endofed-client`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="endofed-client",
        description=(
            "Join the federation as a hospital: run the data check (refuse to join if it fails), then start "
            "flower-supernode with the coordinator's CA certificate and this site's private key. Images never "
            "leave the site; only encoder weights and scalar metrics do. With approved_apps in the site YAML, "
            "only those app bundles run (see 'endofed app hash'). Runs until stopped (Ctrl-C)."
        ),
    )
    parser.add_argument("--site", required=True, type=Path, metavar="YAML", help="site config (configs/sites/)")
    add_config_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``endofed-client``."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        from endofed.launch.deployment import run_client

        site = load_site_config(args.site)
        cfg = load_config(args.config, args.overrides)
        return run_client(site, args.site, cfg.data)

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
