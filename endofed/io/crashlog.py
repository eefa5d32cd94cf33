"""Crash logs: where an unexpected error's traceback is written, so that no console (and no message) holds it.

Used by the CLI boundary (``endofed.cli.common``) and by the ClientApp when it cannot tell which site it is.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import traceback
from pathlib import Path

import endofed

LOG_DIR_ENV = "ENDOFED_LOG_DIR"  # where unexpected errors write their traceback


def crash_log_dir() -> Path:
    """Where unexpected errors leave their traceback: ``$ENDOFED_LOG_DIR``, else the user's state folder."""
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "endofed" / "logs"


def write_crash_log(exc: BaseException) -> Path | None:
    """Write the command line, versions and traceback of ``exc`` to a new file; ``None`` if nothing could be written.

    The console gets one line; the details (which may name local paths) stay in this file on this machine.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = (
        f"command: {' '.join(sys.argv)}\nendofed {endofed.__version__}, Python {sys.version.split()[0]}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    for folder in (crash_log_dir(), Path(tempfile.gettempdir())):
        path = folder / f"endofed-error-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError:
            continue
        return path
    return None
