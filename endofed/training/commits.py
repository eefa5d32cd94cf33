"""A round's site state committed after the reply has left, and the lock that makes every reader wait for it.

In deployment every message runs in a fresh ClientApp process, and at ViT-B a round's commit writes 440 MB (the
received global, the next int8 delta's base, and the decoder with its moments): 1.4 s on a VM whose fresh
processes pay for every new page. None of it is needed for the reply, so the site can send the reply first and
commit while Flower pushes it (:class:`PendingCommit`); the process lives until the commit ends.

**The lock.** A store's folder holds ``commit.lock``. A commit holds it exclusively (``flock``) from before the
handler returns until its files are renamed into place; every reader of the store (:mod:`site_state`) holds it
shared while it reads. The next round's process, or the next message in the same process, therefore waits for
the commit and never reads a round half-committed or misses one under way. ``flock`` locks belong to an open
file, so two threads of one process exclude each other as two processes do.

**A commit that fails after the reply** (a full disk, a kill) is logged as one error line; the store keeps what
it had (the write is atomic: :meth:`~endofed.training.site_state.RoundStore.save`). The coordinator has the
reply; the site continues next round from the round before, and an int8 delta against the uncommitted base is
answered with ``SITE_BASE_UNKNOWN``, after which the coordinator sends full weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

LOGGER = logging.getLogger(__name__)
LOCK_FILE = "commit.lock"


def acquire(folder: Path, exclusive: bool) -> int:
    """Open ``folder``'s commit lock and take it (waits while another holder excludes it); returns the handle."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    except BaseException:
        os.close(handle)
        raise
    return handle


def release(handle: int) -> None:
    """Give up a lock taken by :func:`acquire` (closing the file releases it)."""
    os.close(handle)


@contextlib.contextmanager
def locked(folder: Path, exclusive: bool) -> Iterator[None]:
    """Hold ``folder``'s commit lock (:func:`acquire`) for the ``with`` block."""
    handle = acquire(folder, exclusive)
    try:
        yield
    finally:
        release(handle)


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s commit lock shared while reading it: a commit under way ends first.

    A folder that does not exist is not created: there is nothing to read, and a commit creates the folder and
    its lock before the reply that could lead to a read leaves.
    """
    if not folder.is_dir():
        yield
        return
    with locked(folder, exclusive=False):
        yield


class PendingCommit:
    """A store's commit running in its own thread, the store's lock held from creation until it ends.

    The lock is taken in the calling thread (so a reader that starts after this returns waits), the thread is
    not a daemon (the interpreter waits for it at exit), and :meth:`wait` joins it.
    """

    def __init__(self, commit: Callable[[], Path], folder: Path, what: str) -> None:
        self.folder, self.what = folder, what
        self.result: Path | None = None
        self.error: BaseException | None = None
        self._handle = acquire(folder, exclusive=True)
        self._commit = commit
        self._thread = threading.Thread(target=self._run, name=f"commit {what}", daemon=False)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._commit()
        except BaseException as exc:  # noqa: BLE001 - reported in the log: the reply has already left
            self.error = exc
            LOGGER.error(
                "site state %s: %s was not committed after the reply was sent (%s: %s); the next round continues "
                "from the round before", self.folder, self.what, type(exc).__name__, exc,
            )  # fmt: skip
        finally:
            release(self._handle)

    def wait(self) -> Path | None:
        """Block until the commit ended; the committed round folder, or ``None`` if it failed (see the log)."""
        self._thread.join()
        return self.result
