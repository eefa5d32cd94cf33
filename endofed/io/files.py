"""Small file-system checks shared by every reader of user-given files."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOW_SPACE_BYTES = 1 << 20  # below this, a failed write is taken to be a full disk


def special_file(path: Path) -> bool:
    """True when ``path`` exists but is not a regular file (a folder, FIFO, socket or device).

    Reading a FIFO blocks until something writes to it, and a device can stream without end: readers of
    manifests, label files and configs refuse these before opening them.
    """
    return path.exists() and not path.is_file()


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Name ``path`` in an ``OSError`` raised while writing it.

    ``write()`` on a full disk names no file, and numpy's short write (``"16384 requested and 16352 written"``)
    has no errno either: it becomes ``ENOSPC`` when the file system has less than ``LOW_SPACE_BYTES`` left.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        code = exc.errno
        if code is None:
            code = errno.ENOSPC if free_bytes(Path(path)) < LOW_SPACE_BYTES else errno.EIO
        raise OSError(code, exc.strerror or str(exc), str(path)) from exc


def free_bytes(path: Path) -> int:
    """Bytes free on the file system holding ``path`` (or its nearest existing parent); -1 if unknown."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return -1
    return -1
