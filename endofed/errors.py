"""Exceptions that carry one clear, user-facing line (the CLIs print them without a traceback)."""

from __future__ import annotations

import errno


class EndofedError(ValueError):
    """Base class: a problem with the user's input, explained in one line."""


class ConfigError(EndofedError):
    """A config or site YAML is missing, malformed, has an unknown key or a bad value."""


class DataError(EndofedError):
    """A source image, manifest or DICOM series cannot be used; the message names the file and the cause.

    Attributes:
        code: short machine-readable reason (e.g. ``"missing_file"``), used to count failures in the
            data passport without revealing which file failed.
    """

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


# What an ``OSError`` means to a user, by errno (the rest fall back to ``os.strerror``).
_OS_CAUSES = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ELOOP: "symbolic link loop",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error (failing disk or network share?)",
}

MAX_MESSAGE_CHARS = 800  # an error line is cut in the middle beyond this (a value may be huge)


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line (line breaks become spaces), its middle cut out when longer than ``limit`` chars.

    A message quoting a user's value (a config list, a parsed file) can be megabytes long; the start and the
    end, which name the key and the file, are kept.
    """
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    keep = max(limit - 5, 2)
    head = keep - keep // 3
    return f"{flat[:head]} ... {flat[len(flat) - (keep - head) :]}"


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: what failed, the path(s) and the cause in words.

    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/w/cache/x.npy"))
    '/w/cache/x.npy: no space left on the device'
    """
    cause = _OS_CAUSES.get(exc.errno) if exc.errno is not None else None
    cause = cause or (exc.strerror or str(exc) or type(exc).__name__).lower()
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {cause}" if paths else cause


def symlink_loop_path(exc: RuntimeError) -> str | None:
    """The path of pathlib's symlink-loop error (Python < 3.13 raises ``RuntimeError`` for it), else ``None``."""
    text = str(exc)
    prefix = "Symlink loop from "
    return text[len(prefix) :].strip("'\"") if text.startswith(prefix) else None
