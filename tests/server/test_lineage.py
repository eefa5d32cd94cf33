"""The ServerApp's model cards: the checkpointer writes a card that names the sites whose update was aggregated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from endofed.config import ExperimentConfig, FederationConfig
from endofed.io.jsonl import JsonlWriter
from endofed.lineage.passport import passport_metrics, passport_sha256
from endofed.lineage.record import RunLineage
from endofed.lineage.verify import read_card, verify_card
from server.app import _checkpointer
from server.lineage import CardWriter, aggregated_sites
from server.replies import average_metrics, to_record
from server.strategies import make_strategy


def _record(**arrays: list[float]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.array(v, dtype=np.float32)) for k, v in arrays.items()})


def _reply(node: int, weights: list[float], volumes: int, passport: dict) -> Message:
    msg = Message(RecordDict({"config": ConfigRecord({})}), message_type=MessageType.TRAIN, dst_node_id=node)
    metrics = MetricRecord({"num-examples": volumes, "partition-id": node % 10, **passport_metrics(passport)})
    return Message(RecordDict({"arrays": to_record({"w": np.float32(weights)}), "metrics": metrics}), reply_to=msg)


def test_the_passport_words_are_not_averaged():
    records = [
        RecordDict({"metrics": MetricRecord({"num-examples": n, "train-loss": 1.0, **passport_metrics({"n": n})})})
        for n in (1, 3)
    ]
    assert dict(average_metrics(records, "num-examples")) == {"train-loss": pytest.approx(1.0)}


def test_the_checkpointer_writes_a_card_of_the_aggregated_sites_that_verifies(tmp_path):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    cfg = ExperimentConfig(federation=FederationConfig(min_sites=2, quorum=1, max_update_norm_ratio=0.5))
    strategy = make_strategy(cfg.federation, "pretrain", False, JsonlWriter(tmp_path / "rounds.jsonl"))
    cards = CardWriter(RunLineage(), None, "a" * 64)
    save = _checkpointer(tmp_path, "pretrain", cfg, strategy, cards)
    strategy.prepare_round(_record(w=[3.0, 4.0]))  # norm 5: an update may move the weights by <= 2.5
    replies = [
        _reply(11, [3.0, 5.0], 10, {"site": 1}),
        _reply(12, [4.0, 4.0], 30, {"site": 2}),
        _reply(13, [9.0, 12.0], 10, {"site": 3}),
    ]  # 13 moved them by 10: rejected
    arrays, _ = strategy.aggregate_train(1, replies)
    assert set(aggregated_sites(strategy)) == {11, 12}
    save(1, arrays)
    path = tmp_path / "global_encoder_pretrain.safetensors"
    verified = verify_card(path)
    card = verified.card
    assert [(s["node"], s["partition_id"], s["volumes"]) for s in card["sites"]] == [
        (11, 1, {"pretrain": 10}), (12, 2, {"pretrain": 30})]  # fmt: skip
    assert [s["passport_sha256"] for s in card["sites"]] == [passport_sha256({"site": 1}), passport_sha256({"site": 2})]
    assert card["federation"]["rounds_completed"]["pretrain"] == 1 and card["software"]["app_bundle_sha256"] == "a" * 64
    assert card["model"]["tensors"] == 1 and card["model"]["parameters"] == 2
    # the server state came after the card: the commit point of the round
    assert (tmp_path / "server_state.safetensors").is_file()

    # a resumed run continues the lineage of the card it resumes from
    class _Grid:
        run = None

    again = CardWriter.start(tmp_path, _Grid(), None, "pretrain")  # type: ignore[arg-type]
    assert again.lineage.sites == cards.lineage.sites
    assert again.lineage.notes == ["resumed after pretrain round 1"]
    assert json.loads((tmp_path / "global_encoder_pretrain.card.json").read_text()) == read_card(path)


def test_a_card_that_cannot_be_written_does_not_end_the_run(tmp_path, caplog):
    cards = CardWriter(RunLineage(), None, None)
    cards.write(tmp_path / "missing.safetensors", _record(w=[1.0]), {}, "")  # no checkpoint there: logged
    assert "could not write the model card" in caplog.text
