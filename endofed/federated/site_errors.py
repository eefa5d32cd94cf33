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
SITE_REFUSED_GLOBAL, SITE_DIVERGED, SITE_WITHHELD = 106, 107, 108
SITE_BASE_UNKNOWN = 111  # int8 down-link: the site does not hold the weights a delta is against
SITE_NOT_APPROVED = 110  # sent by the site's approval gate (endofed.approval), not by the ClientApp

SENTENCES: dict[int, str] = {
    SITE_DATA: "the site's data check failed; its operator can see why in the site's logs",
    SITE_CONFIG: "the site's configuration is invalid; its operator can see why in the site's logs",
    SITE_STORAGE: "the site could not read or write its files (disk full, permissions?); see the site's logs",
    SITE_RESOURCES: "the site ran out of memory; see the site's logs",
    SITE_REFUSED: "the site refused the message (not a valid endofed instruction); see the site's logs",
    SITE_REFUSED_GLOBAL: "the site refused the global encoder it received (not finite, not the model's keys, shapes "
    "or dtypes, or too far from the last global it knows); its local state is unchanged",
    SITE_DIVERGED: "local training produced non-finite weights; the site kept its previous local state",
    SITE_NOT_APPROVED: "this site has not approved the app bundle of the run (its hash is not in approved_apps)",
    SITE_BASE_UNKNOWN: "the site does not hold the weights this delta is relative to (int8 down-link); it needs "
    "the full weights, which the coordinator sends in its next round",
    SITE_WITHHELD: "the site withheld its reply: it held more than the protocol allows; see the site's logs",
    SITE_INTERNAL: "the site's endofed code failed unexpectedly; see the site's logs",
}
ERROR_LOG = "clientapp-errors.log"  # in <work_dir>/logs/ (or the crash-log folder if the site is unknown)


class GlobalRefused(EndofedError):
    """The encoder a site received fails its checks (see :mod:`endofed.training.site_state`); nothing was touched."""


class StateNotFinite(EndofedError):
    """Local training produced NaN or Inf: the round is refused and nothing of it is saved."""


class WithheldReply(EndofedError):
    """A reply held more than the protocol allows (:mod:`endofed.federated.audit`): the site does not send it."""


class BaseUnknown(EndofedError):
    """An int8 down-link delta names a base the site does not hold, or decodes to other weights than announced."""


# The first entry whose types ``exc`` is an instance of gives its code (the specific ones before their bases).
CATEGORIES: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
    ((GlobalRefused,), SITE_REFUSED_GLOBAL),
    ((StateNotFinite,), SITE_DIVERGED),
    ((WithheldReply,), SITE_WITHHELD),
    ((BaseUnknown,), SITE_BASE_UNKNOWN),
    ((DataError,), SITE_DATA),
    ((ConfigError,), SITE_CONFIG),
    ((OSError,), SITE_STORAGE),
    ((MemoryError,), SITE_RESOURCES),
    ((EndofedError, KeyError, TypeError), SITE_REFUSED),  # the message or its records were not what the protocol says
)


def category(exc: BaseException) -> int:
    """The category code of ``exc``, from its type only (its message may identify a patient)."""
    return next((code for types, code in CATEGORIES if isinstance(exc, types)), SITE_INTERNAL)


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
