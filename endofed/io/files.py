"""Small file-system checks shared by every reader of user-given files."""

from __future__ import annotations

from pathlib import Path


def special_file(path: Path) -> bool:
    """True when ``path`` exists but is not a regular file (a folder, FIFO, socket or device).

    Reading a FIFO blocks until something writes to it, and a device can stream without end: readers of
    manifests, label files and configs refuse these before opening them.
    """
    return path.exists() and not path.is_file()
