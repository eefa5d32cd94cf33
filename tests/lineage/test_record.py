"""The run lineage: which sites shaped the encoder, in which rounds of which phase."""

from __future__ import annotations

import pytest

from endofed.lineage.passport import passport_metrics
from endofed.lineage.record import RunLineage

A, B = passport_metrics({"n": 1}), passport_metrics({"n": 2})


def test_rounds_and_sites_are_counted_per_phase():
    lineage = RunLineage()
    lineage.observe_round("pretrain", 1, True, {7: {"num-examples": 5.0, "partition-id": 1.0, "train-loss": 0.9, **A},
                                                3: {"num-examples": 4.0, "partition-id": 0.0, **B}})  # fmt: skip
    lineage.observe_round("pretrain", 2, False, {7: {"num-examples": 5.0, **A}})  # below the quorum: not counted
    lineage.observe_round("pretrain", 3, True, {7: {"num-examples": 5.0, "train-loss": 0.5, **A}})
    lineage.observe_round("finetune", 1, True, {7: {"num-examples": 2.0, **A}})
    assert lineage.rounds_completed == {"pretrain": 3, "finetune": 1}
    assert lineage.rounds_aggregated == {"pretrain": 2, "finetune": 1}
    first, second = lineage.site_list()  # by partition id
    assert (first["node"], first["partition_id"], first["rounds"], first["volumes"]) == (3, 0, {"pretrain": 1},
                                                                                         {"pretrain": 4})  # fmt: skip
    assert second["rounds"] == {"pretrain": 2, "finetune": 1} and second["volumes"] == {"pretrain": 5, "finetune": 2}
    assert second["train_loss"] == {"pretrain": 0.5} and second["passport_changes"] == 0
    from endofed.lineage.passport import passport_sha256

    assert first["passport_sha256"] == passport_sha256({"n": 2}) and second["passport_sha256"] == passport_sha256(
        {"n": 1}
    )


def test_a_changed_passport_is_counted_and_the_latest_kept():
    lineage = RunLineage()
    lineage.observe_round("pretrain", 1, True, {1: {"num-examples": 1, **A}})
    lineage.observe_round("pretrain", 2, True, {1: {"num-examples": 1, **B}})
    (site,) = lineage.site_list()
    assert site["passport_changes"] == 1 and site["passport_sha256"] == lineage.sites["1"]["passport_sha256"]


def test_the_lineage_round_trips_through_plain_data():
    lineage = RunLineage()
    lineage.observe_round("pretrain", 1, True, {9: {"num-examples": 3, **A}})
    lineage.notes.append("a note")
    again = RunLineage.from_dict(lineage.to_dict())
    assert again.to_dict() == lineage.to_dict()
    with pytest.raises(ValueError, match="not a run lineage"):
        RunLineage.from_dict({"sites": []})
