"""A federated site's own state on disk, and its checks on what it receives: nothing bad gets in, nothing torn stays.

**The received encoder** is checked before the site touches its local state
(:mod:`endofed.training.received_checks`). Nothing non-finite is ever written.

**Layout** (``<work_dir>/federation/<run key>/<name>/``, ``name`` = ``mae`` or ``classifier``)::

    round-0004/state.safetensors + state.json    local.* (decoder or head) and optim.* tensors of round 4
    round-0004/global.safetensors + global.json  the encoder the site received for round 4 (its last known global,
                                                 with its digest: the base of an int8 down-link delta)
    round-0003/...                               the state round 4 continued from: a repeated round 4 redoes it
    commit.lock                                  held by a commit, shared by readers (endofed.training.commits)

**Writing** (:meth:`RoundStore.save`) is atomic by one directory rename: both checkpoints go into
``.partial-round-0004-<pid>/``, which is renamed to ``round-0004`` once complete (an older ``round-0004``, a
repeated round's, is first renamed aside). A kill at any point leaves the previous rounds whole, plus a
``.partial-*`` or ``.trash-*`` folder that readers ignore and the next save removes (killed between the two
renames of a repeated round, the site has lost that round's first result and goes on as if it had missed the
round). Only the new round and the round it continued from are kept. A store whose states carry a hash (the
federated site's both) flushes nothing to disk: after a power cut, a round the page cache had not written back is
missing, or fails its hash or digest when read and is passed over like a torn one, so the site continues from an
older round (or its initial weights), never from spoiled bytes. An unhashed store flushes its state and folders.
:meth:`RoundStore.save_later` does the same in a thread, after the caller's reply (a deployed site).

**Reading** (:meth:`RoundStore.load`; every reader first waits for a commit under way) takes the newest
readable round before the one asked for; a round that cannot be read (cut short, empty, missing a file,
non-finite) is skipped with one warning line naming it and the round used instead.

:func:`fault_point` marks each write step. It is a no-op unless the environment variable
:data:`KILL_ENV` names that step: then the process SIGKILLs itself there. **Test-only**: the kill tests
(``tests/training/test_site_kill.py``) use it to stop a real site process at each step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from endofed.federated.arrays import StateLike, to_tensor
from endofed.federated.downlink import state_digest
from endofed.federated.rounds import site_state_to_resume
from endofed.io.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from endofed.training.commits import PendingCommit, locked, reading
from endofed.training.received_checks import require_finite

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

STATE_FILE, GLOBAL_FILE = "state.safetensors", "global.safetensors"
DIGEST_KEY = "digest"  # global.json: the received encoder's state_digest (the int8 down-link's base)
ROUND_PREFIX, PARTIAL_PREFIX, TRASH_PREFIX = "round-", ".partial-", ".trash-"
KILL_ENV = "ENDOFED_TEST_KILL_AT"  # test-only: the write step at which the process SIGKILLs itself
WRITE_STEPS = ("partial-dir", "state-written", "global-written", "old-round-aside", "round-renamed", "pruned")


def fault_point(step: str) -> None:
    """Test-only: SIGKILL this process if ``$ENDOFED_TEST_KILL_AT`` is ``step`` (one of :data:`WRITE_STEPS`)."""
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------------- checks
def round_folder_name(server_round: int) -> str:
    """``round-0004`` for round 4 (zero-padded: names sort like the rounds)."""
    return f"{ROUND_PREFIX}{server_round:04d}"


def parse_round_folder(name: str) -> int | None:
    """The round of a committed round folder's name (``round-0004`` -> 4); ``None`` for anything else."""
    digits = name.removeprefix(ROUND_PREFIX)
    return int(digits) if name.startswith(ROUND_PREFIX) and digits.isdigit() else None


def rounds_to_drop(saved: list[int], written: int, base: int | None) -> list[int]:
    """The saved rounds a save of round ``written``, continued from round ``base``, makes obsolete.

    Kept: ``written`` and ``base`` (a repeat of ``written`` redoes it from ``base``). Dropped: every other round,
    including a newer one (the server has gone back to ``written``: those belong to an abandoned future) and a
    round newer than ``base`` that could not be read.
    """
    return sorted(r for r in saved if r not in (written, base))


def _fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@dataclass(frozen=True)
class KnownGlobal:
    """The encoder a site received for one round: the reference of the next received encoder's norm bound."""

    phase: str
    server_round: int
    total_rounds: int
    arrays: dict[str, np.ndarray]
    digest: str | None = None  # its state_digest as recorded when it was saved (None: saved before digests)


class RoundStore:
    """The saved rounds of one kind of site-local state (``mae`` or ``classifier``) of one run (see module doc)."""

    def __init__(self, folder: Path, hashed: bool = False) -> None:
        self.folder, self.hashed = folder, hashed

    def rounds(self) -> list[int]:
        """The committed rounds on disk, oldest first (``.partial-*`` and ``.trash-*`` folders are not rounds)."""
        if not self.folder.is_dir():
            return []
        found = (parse_round_folder(p.name) for p in self.folder.iterdir() if p.is_dir())
        return sorted(r for r in found if r is not None)

    def round_path(self, server_round: int, file: str = STATE_FILE) -> Path:
        """A file of a committed round (``state.safetensors`` or ``global.safetensors``)."""
        return self.folder / round_folder_name(server_round) / file

    def load(
        self, before: int | None, read: Callable[[dict[str, torch.Tensor], dict[str, Any]], T]
    ) -> tuple[int, T] | None:
        """The newest readable state saved before round ``before`` (any round for ``None``), as ``read`` makes it.

        A round that cannot be read (the checkpoint refuses it, ``read`` raises ``ValueError``, or it holds NaN/Inf)
        is passed over; one warning names the rounds passed over and the round used. ``None``: no round to
        continue from (round 1, nothing saved, or nothing readable: the site starts from its initial weights).

        Raises:
            ValueError: every saved round is ``before`` or later (another run's state: see ``site_state_to_resume``).
        """
        with reading(self.folder):
            return self._load(before, read)

    def _load(
        self, before: int | None, read: Callable[[dict[str, torch.Tensor], dict[str, Any]], T]
    ) -> tuple[int, T] | None:
        saved = self.rounds()
        candidates = sorted(saved, reverse=True) if before is None else site_state_to_resume(before, saved)
        failed: list[str] = []
        for server_round in candidates:
            try:
                tensors, meta = load_checkpoint(self.round_path(server_round), verify_hash=self.hashed)
                require_finite(tensors, "saved state")
                result = (server_round, read(tensors, meta))
            except (ValueError, OSError) as exc:  # CheckpointError and StateNotFinite are ValueErrors
                failed.append(f"round {server_round} ({type(exc).__name__}: {exc})")
                continue
            if failed:
                LOGGER.warning("site state %s: passed over unreadable %s; continuing from round %d",
                               self.folder, "; ".join(failed), server_round)  # fmt: skip
            return result
        if failed:
            LOGGER.warning("site state %s: passed over unreadable %s; starting from the initial weights",
                           self.folder, "; ".join(failed))  # fmt: skip
        return None

    def _read_global(self, server_round: int) -> KnownGlobal:
        """Round ``server_round``'s received encoder, with its place in the run.

        Raises:
            ValueError, OSError, KeyError, TypeError: unreadable, incomplete or non-finite.
        """
        tensors, meta = load_checkpoint(self.round_path(server_round, GLOBAL_FILE), verify_hash=False)
        require_finite(tensors, "saved global")
        arrays = {k: v.numpy() for k, v in tensors.items()}
        return KnownGlobal(str(meta["phase"]), int(meta["round"]), int(meta["total_rounds"]), arrays,
                           meta.get(DIGEST_KEY))  # fmt: skip

    def last_global(self) -> KnownGlobal | None:
        """The newest readable, finite received encoder of any saved round whose digest holds (``None``: none).

        The received encoder is written without waiting for the disk (see :meth:`save`), so after a power cut it
        could read back as zeros or half-written; its recorded digest is checked here (a global saved without one
        is taken as it is) and a global that fails is passed over like an unreadable one.
        """
        with reading(self.folder):
            return self._last_global()

    def _last_global(self) -> KnownGlobal | None:
        for server_round in reversed(self.rounds()):
            try:
                known = self._read_global(server_round)
                if known.digest is not None and state_digest(known.arrays) != known.digest:
                    raise ValueError("its arrays do not have the digest recorded with them")
            except (ValueError, OSError, KeyError, TypeError) as exc:
                LOGGER.debug("site state %s: no usable global in round %d (%s)", self.folder, server_round, exc)
                continue
            return known
        return None

    def global_with_digest(self, digest: str) -> KnownGlobal | None:
        """The received encoder of a kept round whose recorded digest (:func:`state_digest`) is ``digest``, or ``None``.

        Only the small JSON metadata is read until one matches. Its arrays are not hashed again here: what the
        site decodes from them is checked against the digest the coordinator announced (``client/app.py``),
        which a base other than the recorded one cannot pass.
        """
        with reading(self.folder):
            return self._global_with_digest(digest)

    def _global_with_digest(self, digest: str) -> KnownGlobal | None:
        for server_round in reversed(self.rounds()):
            path = self.round_path(server_round, GLOBAL_FILE)
            try:
                meta = read_metadata(path, verify_hash=False)
                if meta is None or meta.get(DIGEST_KEY) != digest:
                    continue
                return self._read_global(server_round)
            except (ValueError, OSError, KeyError, TypeError) as exc:
                LOGGER.debug("site state %s: round %d's global unreadable (%s)", self.folder, server_round, exc)
        return None

    def save(
        self,
        plan: tuple[str, int, int],
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any],
        received: StateLike,
        base: int | None,
        digest: str | None = None,
    ) -> Path:
        """Commit one round's state and the encoder it received, atomically; drop what is no longer needed.

        Args:
            plan: ``(phase, server_round, total_rounds)`` of the round.
            tensors: the site-local tensors (``local.*``, ``optim.*``).
            metadata: their JSON metadata (``round``, ``phase`` and ``total_rounds`` are added).
            received: the encoder received for this round (already checked).
            base: the round this one continued from (kept for a repeat), ``None`` if from the initial weights.
            digest: ``state_digest(received)`` if the caller has it (else it is computed here).

        Only an unhashed store flushes its state and folders to disk before and after the rename. A hashed state
        is checked against its hash when read, and the received encoder (347 MB at ViT-B) against the digest
        recorded with it (:meth:`last_global`) or through what the site decodes from it (the int8 down-link),
        so a copy that a power cut spoiled is passed over like a torn one, never used; flushing a ViT-B round
        cost 0.6-0.8 s on this machine.

        Returns:
            The committed round folder.

        Raises:
            StateNotFinite: a tensor holds NaN or Inf (nothing is written).
        """
        commit = self._checked_commit(plan, tensors, metadata, received, base, digest)
        with locked(self.folder, exclusive=True):
            return commit()

    def save_later(
        self,
        plan: tuple[str, int, int],
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any],
        received: StateLike,
        base: int | None,
        digest: str | None = None,
    ) -> PendingCommit:
        """:meth:`save` with the files written by a thread while the caller goes on (:mod:`~endofed.training.commits`).

        The checks run here; the store's lock is held from now until the commit ends, so every reader waits.
        The tensors must not change until :meth:`PendingCommit.wait` returns.

        Raises:
            StateNotFinite: a tensor holds NaN or Inf (nothing is written).
        """
        commit = self._checked_commit(plan, tensors, metadata, received, base, digest)
        return PendingCommit(commit, self.folder, f"{plan[0]} round {plan[1]}")

    def _checked_commit(
        self,
        plan: tuple[str, int, int],
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any],
        received: StateLike,
        base: int | None,
        digest: str | None,
    ) -> Callable[[], Path]:
        """Check the round's tensors (finite) and return the commit that writes them (see :meth:`save`)."""
        received_tensors = {k: to_tensor(v) for k, v in received.items()}
        require_finite(tensors, "local state")
        require_finite(received_tensors, "received encoder")
        return lambda: self._commit(plan, tensors, metadata, received_tensors, base, digest)

    def _commit(
        self,
        plan: tuple[str, int, int],
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any],
        received_tensors: dict[str, torch.Tensor],
        base: int | None,
        digest: str | None,
    ) -> Path:
        """Write, rename into place and prune (the caller holds the store's lock)."""
        phase, server_round, total_rounds = plan
        about = {"phase": phase, "round": server_round, "total_rounds": total_rounds}
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f"{PARTIAL_PREFIX}{round_folder_name(server_round)}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)  # left by an earlier process that had the same pid
        partial.mkdir()
        fault_point("partial-dir")
        save_checkpoint(partial / STATE_FILE, tensors, {**metadata, **about}, content_hash=self.hashed,
                        durable=not self.hashed)  # a hashed one is checked when read  # fmt: skip
        fault_point("state-written")
        digest = digest or state_digest({k: v.numpy() for k, v in received_tensors.items()})
        save_checkpoint(partial / GLOBAL_FILE, received_tensors, about | {DIGEST_KEY: digest}, content_hash=False,
                        durable=False)  # fmt: skip
        fault_point("global-written")
        if not self.hashed:  # a hashed round is checked when read: nothing of it need be flushed (see above)
            _fsync_dir(partial)
        target = self.folder / round_folder_name(server_round)
        if target.exists():  # a repeated round: its earlier result goes aside first (a rename, not a slow delete)
            self._discard(target)
            fault_point("old-round-aside")
        os.rename(partial, target)
        if not self.hashed:
            _fsync_dir(self.folder)
        fault_point("round-renamed")
        self._prune(server_round, base)
        fault_point("pruned")
        return target

    def _discard(self, folder: Path) -> None:
        """Rename ``folder`` to a ``.trash-*`` name (one atomic step; :meth:`_prune` deletes it)."""
        os.rename(folder, self.folder / f"{TRASH_PREFIX}{folder.name}-{os.getpid()}-{os.urandom(4).hex()}")

    def _prune(self, written: int, base: int | None) -> None:
        """Drop the rounds that :func:`rounds_to_drop` names, and every leftover partial or discarded folder."""
        for server_round in rounds_to_drop(self.rounds(), written, base):
            self._discard(self.folder / round_folder_name(server_round))
        for leftover in self.folder.iterdir():
            if leftover.name.startswith((PARTIAL_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(leftover, ignore_errors=True)
