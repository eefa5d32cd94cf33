"""``endofed app hash [APP_DIR]``: the SHA-256 of the app bundle ``flwr run APP_DIR`` would ship.

A site lists the hashes it approves under ``approved_apps`` in its site YAML (see :mod:`endofed.approval`);
the coordinator's operator (or the site's reviewer, from the same checkout) prints the hash with this command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from endofed.cli.common import EXIT_OK


def register(commands: Any) -> None:
    """Add the ``app`` command group."""
    group = commands.add_parser(
        "app", help="the Flower app bundle sites run", description="The Flower app bundle (FAB) sites run."
    )
    sub = group.add_subparsers(dest="app_command", metavar="ACTION", required=True)
    hash_cmd = sub.add_parser(
        "hash",
        help="print the SHA-256 of the bundle 'flwr run APP_DIR' would ship",
        description=(
            "Print the SHA-256 of the app bundle that 'flwr run APP_DIR' (and endofed-server with app_dir) would "
            "build and ship: the value a site lists under approved_apps in its site YAML to run it. Any changed "
            "byte of a shipped file changes it."
        ),
    )
    hash_cmd.add_argument("app_dir", nargs="?", default=".", type=Path, metavar="APP_DIR",
                          help="the Flower app folder (default: the current folder)")  # fmt: skip
    hash_cmd.set_defaults(handler=print_hash)


def print_hash(args: argparse.Namespace) -> int:
    """Print the bundle hash of ``args.app_dir`` on stdout."""
    from endofed.approval.bundle import bundle_hash

    print(bundle_hash(args.app_dir))
    return EXIT_OK
