"""``endofed``: the site and researcher command (data checks, DICOM conversion, config inspection)."""

from __future__ import annotations

import argparse

import endofed
from endofed.cli import (
    app_cmd,
    card_cmd,
    certs_cmd,
    compare_cmd,
    config_cmd,
    dashboard_cmd,
    data_cmd,
    synth_cmd,
    train_cmd,
)
from endofed.cli.common import EXIT_USAGE, run_command


def build_parser() -> argparse.ArgumentParser:
    """The ``endofed`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="endofed",
        description=(
            "Federated self-supervised 3D MRI (T1 + T2) for endometriosis: data tools, synthetic benchmark, "
            "single-site training and the comparison of every arm."
        ),
        epilog="Run 'endofed COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"endofed {endofed.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    data_cmd.register(commands)
    synth_cmd.register(commands)
    train_cmd.register(commands)
    compare_cmd.register(commands)
    certs_cmd.register(commands)
    config_cmd.register(commands)
    app_cmd.register(commands)
    card_cmd.register(commands)
    dashboard_cmd.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    return run_command(lambda: handler(args), verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
