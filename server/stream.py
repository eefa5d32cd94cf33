"""Replies one at a time, as they arrive: the grid wrapper behind the coordinator's in-place aggregation.

Flower's ``Grid.send_and_receive`` returns a list of every reply, so a round holds all sites' weights in memory
at once before ``aggregate_train`` sees any of them. :class:`StreamingGrid` pushes the same messages but returns
a generator: it pulls the pending replies a few message ids at a time and yields each reply as soon as it is
there, so the strategy can fold it into a running sum and drop it (``server/strategies.py``). At most
``batch`` replies are in flight in this process at once, whatever the number of sites.

With ``window`` > 0 (``federation.max_in_flight``) at most that many messages are out at once: the next is pushed
as replies come in. Replies that arrive faster than the server folds them wait unpulled in Flower (in the same
process under simulation), so an unbounded round can hold up to one reply per site there; a window bounds that
to ``window`` replies, at the price of starting the sites beyond it later (their wait counts against ``timeout``).

It keeps Flower's contract otherwise: replies in any order, the same ``timeout`` (replies not there by then are
not waited for, and messages not pushed by then are not sent), and every other ``Grid`` method passed through
unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

PULL_BATCH = 4  # message ids per pull: bounds the replies held at once
POLL_S = 0.2  # pause between sweeps that found nothing (Flower's own grid sleeps 3 s between pulls)


def send_window(max_in_flight: int, parallel: int) -> int:
    """Messages out at once: ``federation.max_in_flight`` when set, else one more than the sites that run at once.

    ``parallel`` is how many sites the simulation engine runs at once (0 = unknown, e.g. a deployment, where
    every site has its own machine and all of them start at once: window 0). One message beyond the running
    sites keeps a slot busy while a reply is being folded; more would only wait, held by the engine.

    >>> send_window(5, 2), send_window(0, 2), send_window(0, 0)
    (5, 3, 0)
    """
    if max_in_flight < 0 or parallel < 0:
        raise ValueError(f"max_in_flight and parallel must be >= 0, got {max_in_flight} and {parallel}")
    if max_in_flight:
        return max_in_flight
    return parallel + 1 if parallel else 0


class StreamingGrid:
    """A ``Grid`` whose ``send_and_receive`` yields replies one by one (see the module docstring)."""

    def __init__(self, grid: Grid, batch: int = PULL_BATCH, poll_s: float = POLL_S, window: int = 0) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if window < 0:
            raise ValueError(f"window must be >= 0 (0 = every message at once), got {window}")
        self._grid, self._batch, self._poll_s, self._window = grid, batch, poll_s, window

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        """Push ``messages`` (the first ``window`` of them); the generator yields replies as they arrive."""
        queue = list(messages)
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._replies(self._push(queue, 0), queue, deadline)

    def _push(self, queue: list[Message], out: int) -> list[str]:
        """Push messages from the front of ``queue`` (removed from it); the ids Flower accepted.

        Without a window all of them at once; else while fewer than the window are ``out``. A message Flower could
        not push comes back without an id and is skipped.
        """
        if not self._window:
            batch, queue[:] = list(queue), []
            return [message_id for message_id in self._grid.push_messages(batch) if message_id]
        pushed: list[str] = []
        while queue and out + len(pushed) < self._window:
            room = self._window - out - len(pushed)
            batch, queue[:] = queue[:room], queue[room:]
            pushed += [message_id for message_id in self._grid.push_messages(batch) if message_id]
        return pushed

    def _replies(self, pending: list[str], queue: list[Message], deadline: float | None) -> Iterator[Message]:
        while pending and (deadline is None or time.monotonic() < deadline):
            answered: set[str] = set()
            for start in range(0, len(pending), self._batch):
                for reply in self._grid.pull_messages(pending[start : start + self._batch]):
                    answered.add(reply.metadata.reply_to_message_id)
                    yield reply
            if answered:
                pending = [message_id for message_id in pending if message_id not in answered]
                if queue:
                    pending += self._push(queue, len(pending))
            else:
                time.sleep(self._poll_s)
