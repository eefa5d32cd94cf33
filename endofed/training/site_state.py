"""A federated site's own state on disk, and its checks on what it receives: nothing bad gets in, nothing torn stays.

**The received encoder** is checked before the site touches its local state (:func:`check_received`): exactly
the model's shared keys and shapes, float32, finite, and within a norm bound of the last global the site knows
(:func:`max_change_ratio`). A failed check raises :class:`~endofed.federated.site_errors.GlobalRefused`: the
site replies with an error and keeps its state. Nothing non-finite is ever written (:func:`require_finite`).

**The bound, from measurement.** An honest global changes little per round: the largest ``update_norm_ratio``
of any site update in the demo and evidence runs (``runs/*/compare/units/*/federation/rounds.jsonl``: 5 runs,
both phases, 423 site updates) is 0.0234, and a FedAvg global step, a weighted mean of such updates, is at most
that; FedAdam with Flower's defaults (eta 0.1, tau 1e-3) moved the tiny model's global by at most 0.037 per
round (3 sites, 4 + 4 rounds). :data:`MAX_CHANGE_PER_ROUND` = 0.5 is 13x the latter and 21x the former, per
round between the last known global and the received one (a site that was away for n rounds accepts n x 0.5,
by the triangle inequality), while a coordinator's 1e36-scaled or unrelated encoder is far outside it.

**Layout** (``<work_dir>/federation/<run key>/<name>/``, ``name`` = ``mae`` or ``classifier``)::

    round-0004/state.safetensors + state.json    local.* (decoder or head) and optim.* tensors of round 4
    round-0004/global.safetensors + global.json  the encoder the site received for round 4 (its last known global,
                                                 with its digest: the base of an int8 down-link delta)
    round-0003/...                               the state round 4 continued from: a repeated round 4 redoes it

**Writing** (:meth:`RoundStore.save`) is atomic by one directory rename: both checkpoints go into
``.partial-round-0004-<pid>/``, which is renamed to ``round-0004`` once complete (an older ``round-0004``, a
repeated round's, is first renamed aside). A kill at any point leaves the previous rounds whole, plus a
``.partial-*`` or ``.trash-*`` folder that readers ignore and the next save removes (killed between the two
renames of a repeated round, the site has lost that round's first result and goes on as if it had missed the
round). Only the new round and the round it continued from are kept. A store whose states carry a hash (the
federated site's both) flushes nothing to disk: after a power cut, a round the page cache had not written back is
missing, or fails its hash or digest when read and is passed over like a torn one, so the site continues from an
older round (or its initial weights), never from spoiled bytes. An unhashed store flushes its state and folders.

**Reading** (:meth:`RoundStore.load`) takes the newest readable round before the one asked for; a round that
cannot be read (cut short, empty, missing a file, non-finite) is skipped with one warning line naming it and the
round used instead.

:func:`fault_point` marks each write step. It is a no-op unless the environment variable
:data:`KILL_ENV` names that step: then the process SIGKILLs itself there. **Test-only**: the kill tests
(``tests/training/test_site_kill.py``) use it to stop a real site process at each step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from endofed.federated.arrays import StateLike, key_mismatch, per_entry, state_to_numpy, to_tensor
from endofed.federated.downlink import state_digest
from endofed.federated.protocol import PHASES
from endofed.federated.rounds import site_state_to_resume
from endofed.federated.site_errors import GlobalRefused, StateNotFinite
from endofed.federated.validate import update_norm_ratio
from endofed.io.checkpoint import load_checkpoint, read_metadata, save_checkpoint

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CHANGE_PER_ROUND = 0.5  # ||received - last known global|| / ||last known global|| per round apart (see above)
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
def require_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`StateNotFinite` naming the first floating-point entry of ``tensors`` with NaN or Inf."""
    for key, tensor in tensors.items():  # min and max are NaN if any value is, +-Inf if any is: one fast pass
        if tensor.is_floating_point() and tensor.numel() and not all(map(math.isfinite, torch.aminmax(tensor))):
            raise StateNotFinite(f"{what}: {key!r} contains NaN or Inf; nothing of this round is saved")


def rounds_apart(reference: tuple[str, int, int], phase: str, server_round: int | None) -> int:
    """Global rounds between a known global (``(phase, round, total_rounds)``) and one received now (>= 1).

    ``server_round`` is ``None`` for an evaluation, which comes at the end of a phase: the rest of the
    reference's phase then. From the end of pre-training into fine-tuning round k: the pre-training rounds
    left, plus k.
    """
    ref_phase, ref_round, ref_total = reference
    if server_round is None:
        return max(1, ref_total - ref_round + 1)
    if PHASES.index(ref_phase) < PHASES.index(phase):
        return max(1, ref_total - ref_round + server_round)
    return max(1, server_round - ref_round)  # a repeated round: the same global again (0 apart)


def max_change_ratio(apart: int, dp_allowance_ratio: float = 0.0) -> float:
    """The largest accepted change of the global over ``apart`` rounds, relative to its norm.

    :data:`MAX_CHANGE_PER_ROUND` each round, plus under central DP the most one private release can move it
    (:func:`dp_allowance` over the global's norm).
    """
    return (MAX_CHANGE_PER_ROUND + dp_allowance_ratio) * max(1, apart)


DP_NOISE_TAIL = 10.0  # P(||N(0, s^2 I_d)|| > s (sqrt(d) + t)) <= exp(-t^2 / 2): 2e-22 at t = 10


def dp_allowance(noise_multiplier: float, clipping_norm: float, min_sites: int, values: int) -> float:
    """The largest L2 change one central-DP release makes to the global, beyond chance (0 without DP).

    The release is ``global + (sum of clipped updates + N(0, (z C)^2 I)) / n`` over ``n >= min_sites`` sites
    (:func:`endofed.federated.privacy.private_average`): the mean of updates clipped to ``C`` moves it by at most
    ``C``, the noise of std ``s = z C / n`` per value by at most ``s (sqrt(d) + t)`` over ``d`` values except
    with probability ``exp(-t^2 / 2)`` (Gaussian norm concentration, ``t`` = :data:`DP_NOISE_TAIL`).

    Example: z = 1, C = 0.5, 2 sites, 10 000 values: 0.5 + 0.25 * (100 + 10) = 28.0.
    """
    if not noise_multiplier > 0:
        return 0.0
    sigma = noise_multiplier * clipping_norm / max(1, min_sites)
    return clipping_norm + sigma * (math.sqrt(values) + DP_NOISE_TAIL)


def check_received(
    received: StateLike,
    expected: Mapping[str, tuple[int, ...]],
    reference: StateLike | None = None,
    max_ratio: float | None = None,
) -> float | None:
    """Refuse a received encoder that is not the model's, not finite, or too far from the last known global.

    Args:
        received: the encoder entries sent by the server (numpy arrays or tensors).
        expected: the model's shared keys and their shapes (all float32).
        reference: the last global this site received and trained from (``None``: none yet, e.g. round 1).
        max_ratio: the largest accepted ``||received - reference|| / ||reference||`` (with ``reference``).

    Returns:
        The change ratio against ``reference`` (``None`` without one).

    Raises:
        GlobalRefused: one line naming the first problem.
    """
    arrays = state_to_numpy(received)
    mismatch = key_mismatch(expected, arrays)
    if mismatch:
        raise GlobalRefused(f"received encoder keys differ from the model's: {mismatch}")
    for key, shape in expected.items():
        value = arrays[key]
        if value.shape != tuple(shape) or value.dtype != np.float32:
            raise GlobalRefused(f"received {key!r} is {value.dtype} {value.shape}, expected float32 {tuple(shape)}")
    finite = per_entry(lambda key: bool(np.isfinite(arrays[key]).all()), expected)  # on parallel threads
    for key, ok in zip(expected, finite, strict=True):
        if not ok:
            raise GlobalRefused(f"received {key!r} contains NaN or Inf")
    if reference is None:
        return None
    ratio = update_norm_ratio(arrays, reference)
    if max_ratio is not None and not ratio <= max_ratio:
        raise GlobalRefused(
            f"received encoder is {ratio:.3g} x the last known global's norm away (bound {max_ratio:g})"
        )
    return ratio


# ---------------------------------------------------------------------------------------------------- layout
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
        phase, server_round, total_rounds = plan
        received_tensors = {k: to_tensor(v) for k, v in received.items()}
        require_finite(tensors, "local state")
        require_finite(received_tensors, "received encoder")
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
