"""What the coordinator learns of a run, round by round, for the model cards: rounds per phase and the sites.

:class:`RunLineage` is fed after every round by the ServerApp (``server/lineage.py``) with the metrics of the
sites whose update was aggregated; it keeps, per site, its Flower node id (and simulation partition id), the
SHA-256 of its data passport (sent by the site, :mod:`endofed.lineage.passport`), its training volumes and the
rounds it took part in, per phase. It is plain data (:meth:`RunLineage.to_dict`), stored in each card, so a
resumed run continues from the card of the checkpoint it resumes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from endofed.federated.protocol import NUM_EXAMPLES, PARTITION_ID, TRAIN_LOSS
from endofed.lineage.passport import passport_hash_of


@dataclass
class RunLineage:
    """Rounds and participating sites of a run so far.

    Attributes:
        rounds_completed: phase -> the last round number of that phase with a checkpoint.
        rounds_aggregated: phase -> rounds of that phase whose site updates changed the global weights.
        sites: ``str(node)`` -> ``{"node", "partition_id", "passport_sha256", "passport_changes", "volumes":
            {phase: n}, "rounds": {phase: k}, "train_loss": {phase: last loss}}``.
        notes: what the lineage may miss (e.g. rounds before a resume whose card was not found).
    """

    rounds_completed: dict[str, int] = field(default_factory=dict)
    rounds_aggregated: dict[str, int] = field(default_factory=dict)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def observe_round(
        self, phase: str, server_round: int, aggregated: bool, site_metrics: Mapping[int, Mapping[str, Any]]
    ) -> None:
        """Count one checkpointed round of ``phase``.

        Args:
            phase: ``pretrain`` or ``finetune``.
            server_round: the round's number within the phase.
            aggregated: whether the round's updates changed the global weights (a round below the quorum did not).
            site_metrics: node -> the whole metric record of each site whose update was aggregated (ignored when
                ``aggregated`` is false: those sites did not shape this encoder).
        """
        self.rounds_completed[phase] = int(server_round)
        if not aggregated:
            return
        self.rounds_aggregated[phase] = self.rounds_aggregated.get(phase, 0) + 1
        for node, metrics in site_metrics.items():
            self._observe_site(phase, int(node), metrics)

    def _observe_site(self, phase: str, node: int, metrics: Mapping[str, Any]) -> None:
        """Record one site's aggregated update of ``phase``."""
        entry = self.sites.setdefault(str(node), {"node": node, "partition_id": None, "passport_sha256": None,
                                                  "passport_changes": 0, "volumes": {}, "rounds": {},
                                                  "train_loss": {}})  # fmt: skip
        if PARTITION_ID in metrics:
            entry["partition_id"] = int(metrics[PARTITION_ID])
        digest = passport_hash_of(metrics)
        if digest is not None:
            if entry["passport_sha256"] not in (None, digest):
                entry["passport_changes"] += 1  # the site's data changed during the run: the card shows the latest
            entry["passport_sha256"] = digest
        if NUM_EXAMPLES in metrics:
            entry["volumes"][phase] = int(metrics[NUM_EXAMPLES])
        if TRAIN_LOSS in metrics:
            entry["train_loss"][phase] = float(metrics[TRAIN_LOSS])
        entry["rounds"][phase] = entry["rounds"].get(phase, 0) + 1

    def site_list(self) -> list[dict[str, Any]]:
        """The sites, ordered by simulation partition id (if any), then node id."""
        entries = sorted(self.sites.values(), key=lambda e: (e["partition_id"] is None, e["partition_id"] or 0,
                                                              e["node"]))  # fmt: skip
        return [dict(entry) for entry in entries]

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe data (stored in every card)."""
        return {
            "rounds_completed": dict(self.rounds_completed),
            "rounds_aggregated": dict(self.rounds_aggregated),
            "sites": self.site_list(),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunLineage:
        """The lineage saved by :meth:`to_dict` (a resumed run continues it).

        Raises:
            ValueError: ``data`` does not have the shape :meth:`to_dict` writes.
        """
        try:
            sites = {str(int(s["node"])): dict(s) for s in data["sites"]}
            return cls(
                {str(k): int(v) for k, v in data["rounds_completed"].items()},
                {str(k): int(v) for k, v in data["rounds_aggregated"].items()},
                sites,
                [str(note) for note in data.get("notes", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a run lineage record: {exc!r}") from None
