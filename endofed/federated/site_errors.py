"""What a site tells the coordinator when it fails: a category code and a fixed sentence, never the exception.

An exception's text can hold paths, subject ids or values from the site's data (e.g. ``duplicate subject_id
'1234-5678' in /data/endo/manifest.csv``). The ClientApp therefore writes the full detail to a log file at
the site and replies with one of the closed list below; :func:`category` picks it from the exception's type
alone. Codes start at 100, clear of Flower's own error codes.
"""

from __future__ import annotations

import datetime as dt
import os
import traceback
from pathlib import Path

from endofed.errors import ConfigError, DataError, EndofedError

SITE_DATA, SITE_CONFIG, SITE_STORAGE, SITE_RESOURCES, SITE_REFUSED, SITE_INTERNAL = 101, 102, 103, 104, 105, 199

SENTENCES: dict[int, str] = {
    SITE_DATA: "the site's data check failed; its operator can see why in the site's logs",
    SITE_CONFIG: "the site's configuration is invalid; its operator can see why in the site's logs",
    SITE_STORAGE: "the site could not read or write its files (disk full, permissions?); see the site's logs",
    SITE_RESOURCES: "the site ran out of memory; see the site's logs",
    SITE_REFUSED: "the site refused the message (not a valid endofed instruction); see the site's logs",
    SITE_INTERNAL: "the site's endofed code failed unexpectedly; see the site's logs",
}
ERROR_LOG = "clientapp-errors.log"  # in <work_dir>/logs/ (or the crash-log folder if the site is unknown)


def category(exc: BaseException) -> int:
    """The category code of ``exc``, from its type only (its message may identify a patient)."""
    if isinstance(exc, DataError):
        return SITE_DATA
    if isinstance(exc, ConfigError):
        return SITE_CONFIG
    if isinstance(exc, OSError):
        return SITE_STORAGE
    if isinstance(exc, MemoryError):
        return SITE_RESOURCES
    if isinstance(exc, (EndofedError, KeyError, TypeError)):
        return SITE_REFUSED  # the message or its records were not what the protocol says
    return SITE_INTERNAL


def error_reason(code: int) -> str:
    """The reply's reason for ``code``: ``endofed <code>: <sentence>`` (an unknown code counts as internal)."""
    return f"endofed {code}: {SENTENCES.get(code, SENTENCES[SITE_INTERNAL])}"


def write_error_log(folder: Path, exc: BaseException, message_type: str) -> Path:
    """Append the exception's full traceback to ``folder/ERROR_LOG`` (the site's own log); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ERROR_LOG
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"--- {stamp} pid {os.getpid()} {message_type}: category {category(exc)}\n")
        handle.write("".join(traceback.format_exception(exc)))
    return path
