"""Small file-system checks shared by every reader of user-given files."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
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


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (UTF-8) through a uniquely named temporary file in its folder and ``os.replace``.

    A reader sees the old file or the new one, whole; two writers at once leave the last one's. An ``OSError``
    names ``path`` (:func:`writing`), and the temporary file is removed.
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with writing(path), os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
