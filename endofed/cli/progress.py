"""A progress bar over the federated rounds of ``endofed-sim`` and ``endofed-server``, with an ETA.

Flower's streamed log marks the start of round k of n (``[ROUND k/n]``, see :func:`endofed.launch.stream.round_marker`);
:class:`RoundProgress` turns these marks into rounds done out of the run's total and names the phase, while Flower's
own lines keep scrolling above the bar. With ``--quiet`` there is neither: Flower's output goes only to the run's
``logs/flwr-run.log`` and the console gets the final summary (for logs and cron jobs).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from endofed.federated.protocol import FINETUNE, PHASES, PRETRAIN
from endofed.federated.rounds import completed_rounds
from endofed.launch.stream import RoundCallback


@dataclass
class RoundProgress:
    """Rounds done and the round under way, from Flower's ``[ROUND k/n]`` marks (pure: no display).

    Each strategy run (one per phase) counts its rounds from 1, so a mark of round 1 starts the next phase, and
    every mark after the first means the round before it ended.

    Args:
        phases: ``(phase, rounds)`` still to run, in order (phases with 0 rounds left out).
    """

    phases: Sequence[tuple[str, int]]
    done: int = 0
    _marks: int = 0
    _phase: int = -1

    @property
    def total(self) -> int:
        """Rounds of the whole run."""
        return sum(rounds for _, rounds in self.phases)

    def mark(self, server_round: int, rounds: int) -> str:
        """Note the start of round ``server_round`` of ``rounds``; returns the bar's description.

        Example: phases ``[("pretrain", 2), ("finetune", 1)]`` and marks (1, 2), (2, 2), (1, 1) give done 0, 1, 2
        and the descriptions ``pretrain round 1/2``, ``pretrain round 2/2``, ``finetune round 1/1``.
        """
        if server_round == 1 or self._phase < 0:
            self._phase += 1
        self.done, self._marks = self._marks, self._marks + 1
        name = self.phases[min(self._phase, len(self.phases) - 1)][0] if self.phases else "federated"
        return f"{name} round {server_round}/{rounds}"


def phases_left(
    pretrain_rounds: int, finetune_rounds: int, saved: tuple[str, int] | None = None
) -> list[tuple[str, int]]:
    """``(phase, rounds still to run)`` of a run, after the saved state ``(phase, round)`` of a resumed one.

    Example: 3 + 2 rounds resumed after pre-training round 3: ``[("pretrain", 0), ("finetune", 2)]``.
    """
    planned = {PRETRAIN: pretrain_rounds, FINETUNE: finetune_rounds}
    return [(phase, planned[phase] - completed_rounds(PHASES, phase, planned[phase], saved)) for phase in PHASES]


@contextmanager
def round_bar(phases: Sequence[tuple[str, int]], quiet: bool = False) -> Iterator[RoundCallback | None]:
    """A live bar over the rounds of ``phases`` (``None`` and no bar with ``quiet``); completes on a clean exit."""
    if quiet:
        yield None
        return
    state = RoundProgress([(name, rounds) for name, rounds in phases if rounds > 0])
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), redirect_stdout=True) as progress:
        task = progress.add_task("starting the federation", total=state.total or None)

        def on_round(server_round: int, rounds: int) -> None:
            description = state.mark(server_round, rounds)
            progress.update(task, completed=state.done, description=description)

        yield on_round
        progress.update(task, completed=state.total, description="rounds done")
