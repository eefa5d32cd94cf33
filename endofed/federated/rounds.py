"""Round bookkeeping of the coordinator, free of Flower: when a round may start, what counts, in which order.

* :func:`round_can_start`: a round waits for every expected site, but only for a bounded time; after that
  it goes on with a quorum (Flower itself would wait forever for ``min_available_nodes``).
* :func:`update_digest`: a content digest of a site update; aggregating updates sorted by it makes the
  floating-point sum independent of the order in which replies happened to arrive, so a run (and a run
  resumed after a crash) gives bitwise the same global weights.
* :func:`site_state_to_resume`: which of a site's saved local states a round continues from.
* :func:`completed_rounds`: how far a saved server state got in each phase (``endofed-server --resume``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


class QuorumError(RuntimeError):
    """Too few sites are connected to run a round, even after waiting."""


def round_can_start(connected: int, wanted: int, quorum: int, waited_s: float, wait_limit_s: float) -> bool:
    """Whether a round starts now (``True``) or keeps waiting for sites (``False``).

    Args:
        connected: sites connected right now.
        wanted: sites the federation expects (``federation.min_sites``).
        quorum: the fewest sites a round may go on with (``federation.quorum``, at most ``wanted``).
        waited_s: seconds waited so far for this round.
        wait_limit_s: how long to wait for ``wanted`` sites before going on with ``quorum``.

    Raises:
        QuorumError: the wait limit has passed with fewer than ``quorum`` sites connected.
    """
    if not 1 <= quorum <= wanted:
        raise ValueError(f"quorum must be between 1 and {wanted}, got {quorum}")
    if connected >= wanted:
        return True
    if waited_s < wait_limit_s:
        return False
    if connected >= quorum:
        return True
    raise QuorumError(
        f"only {connected} of {wanted} sites connected after {waited_s:.0f} s; a round needs at least {quorum} "
        "(federation.quorum)"
    )


def update_digest(state: Mapping[str, np.ndarray]) -> str:
    """BLAKE2b of a state's keys, dtypes, shapes and bytes, in key order (identical updates, identical digest)."""
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(state):
        value = np.ascontiguousarray(state[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def site_state_to_resume(server_round: int, saved: Iterable[int]) -> list[int]:
    """The saved local states a site's round ``server_round`` may continue from, best first (``[]``: none).

    ``saved`` are the rounds whose local state the site kept (normally its last two). The state to continue
    from is the newest one saved by an *earlier* round: normally the last round; the one before when the server
    repeats a round the site already ran (the coordinator crashed before it received the reply and resumed); an
    older state when the site missed rounds (it was down and rejoined). The older candidates follow in case the
    newest cannot be read (a torn or damaged write). Round 1, and a site without saved state (it joins late),
    starts from the site's fixed initial weights (``[]``).

    Raises:
        ValueError: every saved state is from this round or a later one: it cannot belong to this run's past.
    """
    rounds = sorted(set(saved), reverse=True)
    if server_round <= 1 or not rounds:
        return []
    earlier = [r for r in rounds if r < server_round]
    if not earlier:
        raise ValueError(
            f"round {server_round} asked for, but this site's saved state is from rounds {sorted(rounds)}: "
            "it belongs to another run; use a new run key or remove the site's federation/<run key> folder"
        )
    return earlier


def completed_rounds(phases: Sequence[str], phase: str, rounds: int, saved: tuple[str, int] | None) -> int:
    """Rounds of ``phase`` (of ``rounds`` in all) that a saved server state ``(phase, round)`` has completed.

    Phases run in the order of ``phases``: a phase before the saved one is complete, a later one has not started.
    """
    if saved is None:
        return 0
    position, saved_position = phases.index(phase), phases.index(saved[0])
    if position < saved_position:
        return rounds
    return min(saved[1], rounds) if position == saved_position else 0
