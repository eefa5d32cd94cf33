"""Shared CLI plumbing: one-line errors instead of tracebacks, logging, shared options."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from rich.console import Console

from endofed.errors import EndofedError, describe_os_error, shorten, symlink_loop_path
from endofed.io.crashlog import LOG_DIR_ENV, write_crash_log

__all__ = ["LOG_DIR_ENV", "console", "error_line", "run_command"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

console = Console(stderr=True, highlight=False, soft_wrap=True)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set`` options shared by the commands that read an experiment config."""
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="experiment config (default: built-in defaults, e.g. configs/tiny.yaml)",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config value, e.g. --set data.roi_size=[96,96,32] (repeatable)",
    )


def error_line(exc: BaseException) -> str:
    """The one console line for an exception that ended a command (without the ``endofed: error:`` prefix).

    User errors (:class:`EndofedError`) and file-system errors say the cause; anything else is a bug or an
    unforeseen condition, so its traceback is written to a log file that the line names.
    """
    if isinstance(exc, EndofedError):
        return shorten(str(exc))
    if isinstance(exc, OSError):
        return shorten(describe_os_error(exc))
    if isinstance(exc, RuntimeError) and (loop := symlink_loop_path(exc)) is not None:
        return shorten(f"{loop}: symbolic link loop")
    kind = "out of memory" if isinstance(exc, MemoryError) else f"unexpected {type(exc).__name__}"
    log = write_crash_log(exc)
    where = f"; details in {log}" if log is not None else ""
    return f"{kind}: {shorten(str(exc) or '(no message)', 300)}{where}"


def run_command(func: Callable[[], int], verbose: bool = False) -> int:
    """Run a command; every exception becomes one line on stderr (never a traceback) and a non-zero exit."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return func()
    except KeyboardInterrupt:
        print("endofed: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the one boundary: see error_line
        print(f"endofed: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


def not_yet_available(command: str, issue: str, argv: list[str] | None) -> int:
    """Body of a command whose implementation has not landed yet: ``--help`` works, otherwise say so, exit 2."""
    parser = argparse.ArgumentParser(prog=command, description=f"{command}: {issue} (not yet available)")
    parser.parse_known_args(argv)
    print(f"{command}: not yet available in this version of endofed ({issue}).", file=sys.stderr)
    return EXIT_USAGE


def round_overrides(rounds: int | None, finetune_rounds: int | None) -> list[str]:
    """``--rounds`` / ``--finetune-rounds`` as config overrides of the federation section."""
    overrides = []
    if rounds is not None:
        overrides.append(f"federation.pretrain_rounds={rounds}")
    if finetune_rounds is not None:
        overrides.append(f"federation.finetune_rounds={finetune_rounds}")
    return overrides
