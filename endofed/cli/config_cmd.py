"""``endofed config show``: print the resolved experiment config (defaults + YAML + overrides)."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from endofed.cli.common import EXIT_OK, add_config_args
from endofed.config import load_config, load_site_config, to_dict


def register(commands: Any) -> None:
    """Add the ``config`` command group."""
    group = commands.add_parser("config", help="inspect configuration", description="Inspect configuration.")
    sub = group.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show",
        help="print the resolved config as YAML",
        description="Print the experiment config after defaults, YAML and --set overrides (and a site YAML).",
    )
    add_config_args(show)
    show.add_argument("--site", metavar="YAML", help="also validate and print this site config")
    show.set_defaults(handler=show_config)


def show_config(args: argparse.Namespace) -> int:
    """Print the resolved config(s) as YAML on stdout."""
    document: dict[str, Any] = {"experiment": to_dict(load_config(args.config, args.overrides))}
    if args.site:
        document["site"] = to_dict(load_site_config(args.site))
    print(yaml.safe_dump(document, sort_keys=False), end="")
    return EXIT_OK
