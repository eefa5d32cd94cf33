"""Exceptions that carry one clear, user-facing line (the CLIs print them without a traceback)."""

from __future__ import annotations


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
