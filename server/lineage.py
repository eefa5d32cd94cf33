"""The ServerApp's model cards: after every checkpoint of a global encoder, its card (``endofed.lineage``).

:class:`CardWriter` is made once per run; the checkpointer of ``server/app.py`` calls :meth:`CardWriter.checkpointed`
right after writing ``global_encoder_<phase>.safetensors``. It reads what the card needs from the phase's strategy:
the sites whose update was aggregated in the round (their metrics hold the passport hash words), the sites' latest
test metrics, and the privacy ledger. A card that cannot be built is logged, never fatal: the run goes on, and
``endofed card verify`` then fails for that checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

import endofed
from endofed.federated.privacy import PrivacyLedger
from endofed.federated.protocol import FINETUNE, PRETRAIN, global_encoder_file
from endofed.io.checkpoint import read_metadata
from endofed.lineage.card import CardFacts, build_card, lineage_of
from endofed.lineage.record import RunLineage
from endofed.lineage.source import git_describe
from endofed.lineage.verify import CardError, read_card, write_card

LOGGER = logging.getLogger(__name__)


def aggregated_sites(strategy: Any) -> dict[int, dict[str, float]]:
    """Node -> whole metric record of each site whose update the round log kept and averaged this round.

    Asks the round log (``RoundLogMixin.averaged_sites``), through the DP wrapper if there is one.
    """
    sites: dict[int, dict[str, float]] = getattr(strategy, "inner", strategy).averaged_sites()
    return sites


def _state_size(arrays: ArrayRecord) -> tuple[int, int]:
    """Tensors and parameters of an encoder state."""
    return len(arrays), int(sum(int(np.prod(array.shape)) for array in arrays.values()))


class CardWriter:
    """Writes the card of every global encoder checkpoint of one run (see the module docstring)."""

    def __init__(self, lineage: RunLineage, ledger: PrivacyLedger | None, app_bundle_sha256: str | None,
                 source: str | None = None) -> None:  # fmt: skip
        self.lineage, self.ledger, self.app_bundle_sha256 = lineage, ledger, app_bundle_sha256
        # the launcher's description of its checkout; else this code's own (a ServerApp run from a checkout)
        self.git_describe = source or git_describe(Path(endofed.__file__).parent)
        self._aggregated: dict[str, int] = {}  # phase -> the strategy's aggregated_rounds at the last checkpoint

    @classmethod
    def start(cls, out: Path, grid: Grid, ledger: PrivacyLedger | None, resumed_phase: str | None,
              source: str | None = None) -> CardWriter:  # fmt: skip
        """The run's card writer; a resumed run continues the lineage of the card of the checkpoint it resumes."""
        fab_hash = str(getattr(getattr(grid, "run", None), "fab_hash", "") or "") or None
        lineage = RunLineage()
        if resumed_phase is not None:
            try:
                lineage = lineage_of(read_card(out / global_encoder_file(resumed_phase)))
            except (CardError, ValueError) as exc:
                LOGGER.warning("resumed run: no usable model card to continue (%s); cards list rounds after it", exc)
                lineage.notes.append("resumed run: the sites of the rounds before the resume are not listed")
            lineage.notes.append(f"resumed after {resumed_phase} round {lineage.rounds_completed.get(resumed_phase)}")
        return cls(lineage, ledger, fab_hash, source)

    def checkpointed(self, path: Path, phase: str, server_round: int, arrays: ArrayRecord, strategy: Any) -> None:
        """Count the round in the lineage, then write the card of the checkpoint just saved at ``path``."""
        aggregated = int(strategy.aggregated_rounds) > self._aggregated.get(phase, 0)
        self._aggregated[phase] = int(strategy.aggregated_rounds)
        self.lineage.observe_round(phase, server_round, aggregated, aggregated_sites(strategy))
        evaluation = dict(strategy.last_evaluation) if phase == FINETUNE else {}
        source = f"Each site's test patients, scored with its own head on this encoder (round {server_round})."
        self.write(path, arrays, evaluation, source)

    def write(self, path: Path, arrays: ArrayRecord, evaluation: dict[int, dict[str, float]], source: str) -> None:
        """Write the card of checkpoint ``path`` with these test metrics (a failure is logged, not raised)."""
        try:
            metadata = read_metadata(path)
            assert metadata is not None, path
            tensors, parameters = _state_size(arrays)
            epsilon = None if self.ledger is None else self.ledger.epsilon
            facts = CardFacts(tensors, parameters, self.git_describe, self.app_bundle_sha256, epsilon,
                              None if self.ledger is None else self.ledger.releases, evaluation, source)  # fmt: skip
            write_card(path, build_card(path.name, metadata, self.lineage, facts))
        except Exception:  # a card must not end a federation: verify then fails for this checkpoint
            LOGGER.exception("could not write the model card of %s", path)

    def local_evaluation(self, out: Path, arrays: ArrayRecord, strategy: Any) -> None:
        """Rewrite the final encoder's card with the test metrics of the local fine-tuning evaluation."""
        path = out / global_encoder_file(PRETRAIN)
        if not path.is_file():  # no federated round at all (0 pre-training rounds): no encoder, no card
            return
        source = "Each site's test patients, after fine-tuning this encoder locally with its own head."
        self.write(path, arrays, dict(strategy.last_evaluation), source)
