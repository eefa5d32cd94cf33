"""TensorBoard scalars: hand-computed mapping of round and epoch records, and event files read back by TensorBoard."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from endofed.config import load_config
from endofed.io.jsonl import JsonlWriter
from endofed.io.tensorboard import (
    GLOBAL_RUN,
    Scalar,
    ScalarWriter,
    TensorBoardRoundWriter,
    epoch_logger,
    epoch_scalars,
    round_scalars,
    round_writer,
    site_run,
    weighted_mean,
    write_epochs,
)

TRAIN = {
    "event": "train",
    "phase": "pretrain",
    "round": 3,
    "sites": [
        {"node": 11, "num-examples": 100.0, "train-loss": 1.0, "partition-id": 0.0, "bytes_down": 40, "bytes_up": 10,
         "update_norm_ratio": 0.02, "t-local": 2.5, "train-seconds": 2.0},
        {"node": 22, "num-examples": 300.0, "train-loss": 2.0, "partition-id": 1.0, "bytes_down": 40, "bytes_up": 20,
         "update_norm_ratio": 0.01, "t-local": 3.5, "train-seconds": 3.0},
    ],
    "failures": 1,
    "failed": [{"node": 33}],
    "rejected": [{"node": 44, "reason": "norm"}],
    "aggregated": True,
    "round_seconds": 9.5,
    "aggregation_seconds": 0.25,
    "time": 1000.0,
}  # fmt: skip


def _values(scalars: list[Scalar]) -> dict[tuple[str, str], tuple[float, int]]:
    return {(s.run, s.tag): (s.value, s.step) for s in scalars}


def _read(folder: Path) -> EventAccumulator:
    board = EventAccumulator(str(folder))
    board.Reload()
    return board


def test_a_train_record_gives_global_and_per_site_scalars_at_its_round():
    values = _values(round_scalars(TRAIN))
    assert values[(GLOBAL_RUN, "pretrain/loss")] == (1.75, 3)  # (100 * 1.0 + 300 * 2.0) / 400
    assert values[(GLOBAL_RUN, "pretrain/bytes_down")] == (80.0, 3)  # summed over the sites
    assert values[(GLOBAL_RUN, "pretrain/bytes_up")] == (30.0, 3)
    assert values[(GLOBAL_RUN, "pretrain/sites")] == (2.0, 3)
    assert values[(GLOBAL_RUN, "pretrain/rejected")] == (1.0, 3)
    assert values[(GLOBAL_RUN, "pretrain/failures")] == (1.0, 3)
    assert values[(GLOBAL_RUN, "pretrain/aggregated")] == (1.0, 3)
    assert values[(GLOBAL_RUN, "pretrain/round_seconds")] == (9.5, 3)
    assert values[(GLOBAL_RUN, "pretrain/aggregation_seconds")] == (0.25, 3)
    assert values[("site-1", "pretrain/loss")] == (2.0, 3)
    assert values[("site-0", "pretrain/bytes_up")] == (10.0, 3)
    assert values[("site-1", "pretrain/update_norm_ratio")] == (0.01, 3)
    assert values[("site-0", "pretrain/num_examples")] == (100.0, 3)
    assert values[("site-0", "pretrain/t-local")] == (2.5, 3)
    assert {run for run, _ in values} == {GLOBAL_RUN, "site-0", "site-1"}  # partition ids, never node ids in sim
    assert len(values) == 9 + 2 * 7


def test_a_round_without_valid_updates_still_shows_its_failures():
    record = {**TRAIN, "sites": [], "aggregated": False, "rejected": [{"node": 1}, {"node": 2}]}
    values = _values(round_scalars(record))
    assert values[(GLOBAL_RUN, "pretrain/aggregated")] == (0.0, 3)
    assert values[(GLOBAL_RUN, "pretrain/rejected")] == (2.0, 3)
    assert (GLOBAL_RUN, "pretrain/loss") not in values and (GLOBAL_RUN, "pretrain/bytes_up") not in values


def test_an_evaluate_record_weights_test_metrics_and_leaves_out_undefined_ones():
    record = {"event": "evaluate", "phase": "finetune", "round": 1, "failures": 0, "rejected": [], "sites": [
        {"node": 5, "auc": 0.5, "ece": 0.25, "num-examples": 60.0},
        {"node": 6, "auc": math.nan, "ece": 0.5, "num-examples": 20.0},
        {"node": 7, "auc": None, "ece": None, "num-examples": 20.0},
    ]}  # fmt: skip
    values = _values(round_scalars(record))
    assert values[(GLOBAL_RUN, "finetune-eval/auc")] == (0.5, 1)  # only site 5 has a defined AUC
    assert values[(GLOBAL_RUN, "finetune-eval/ece")] == (0.3125, 1)  # (60 * 0.25 + 20 * 0.5) / 80
    assert values[("node-6", "finetune-eval/ece")] == (0.5, 1)
    assert ("node-6", "finetune-eval/auc") not in values and ("node-7", "finetune-eval/ece") not in values
    assert not any(tag.endswith("num-examples") for _, tag in values)


def test_a_privacy_record_gives_epsilon_and_other_events_give_nothing():
    record = {"event": "privacy", "phase": "pretrain", "round": 2, "released": True, "epsilon": 1.5, "delta": 1e-5,
              "sites_averaged": 3, "clipped_sites": 1, "sites_asked": 3, "nodes": [1, 2, 3]}  # fmt: skip
    values = _values(round_scalars(record))
    assert values == {
        (GLOBAL_RUN, "pretrain-privacy/epsilon"): (1.5, 2),
        (GLOBAL_RUN, "pretrain-privacy/released"): (1.0, 2),
        (GLOBAL_RUN, "pretrain-privacy/clipped_sites"): (1.0, 2),
        (GLOBAL_RUN, "pretrain-privacy/sites_averaged"): (3.0, 2),
        (GLOBAL_RUN, "pretrain-privacy/sites_asked"): (3.0, 2),
    }
    assert round_scalars({"event": "resume", "phase": "pretrain", "round": 2}) == []
    assert round_scalars({"event": "train", "round": 2}) == []  # no phase: no tag to put it under


def test_weighted_mean_and_site_names():
    sites = [{"v": 1.0, "num-examples": 1.0}, {"v": 4.0, "num-examples": 3.0}, {"v": math.inf, "num-examples": 9.0}]
    assert weighted_mean(sites, "v") == 3.25  # (1 + 12) / 4; the infinite value is left out
    assert weighted_mean([{"v": 2.0}, {"v": 4.0}], "v") == 3.0  # no weights: plain mean
    assert weighted_mean([{"v": 2.0, "num-examples": 0.0}], "v") is None
    assert weighted_mean([], "v") is None
    assert site_run({"node": 7, "partition-id": 2.0}) == "site-2"
    assert site_run({"node": 7}) == "node-7"


def test_epoch_scalars_sit_at_the_epochs_index_in_the_schedule():
    metrics = {"epoch": 4.0, "loss": 0.5, "lr": 1e-4, "steps": 3.0, "volumes": 9.0, "seconds": 1.25}
    assert epoch_scalars("pretrain", metrics) == [
        Scalar("", "pretrain/loss", 0.5, 4),
        Scalar("", "pretrain/lr", 1e-4, 4),
        Scalar("", "pretrain/seconds", 1.25, 4),
    ]
    with pytest.raises(ValueError, match="need an 'epoch' index"):
        epoch_scalars("pretrain", {"loss": 1.0})


def test_the_round_writer_tees_records_into_jsonl_and_readable_event_files(tmp_path):
    writer = round_writer(tmp_path / "rounds.jsonl", tensorboard=tmp_path / "tb")
    assert isinstance(writer, TensorBoardRoundWriter)
    writer.write(TRAIN)
    writer.write({**TRAIN, "round": 4, "sites": TRAIN["sites"][:1], "time": 1010.0})
    writer.write({"event": "resume", "phase": "pretrain", "round": 4})  # JSONL only
    # Flushed per record: readable before the writer is closed (a live run).
    board = _read(tmp_path / "tb" / GLOBAL_RUN)
    assert {"pretrain/loss", "pretrain/bytes_up", "pretrain/round_seconds", "pretrain/aggregated"} <= set(
        board.Tags()["scalars"]
    )
    assert [(e.step, e.value, e.wall_time) for e in board.Scalars("pretrain/loss")] == [(3, 1.75, 1000.0),
                                                                                      (4, 1.0, 1010.0)]  # fmt: skip
    site = _read(tmp_path / "tb" / "site-1")
    assert [(e.step, e.value) for e in site.Scalars("pretrain/loss")] == [(3, 2.0)]
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [r["event"] for r in lines] == ["train", "train", "resume"]
    assert type(round_writer(tmp_path / "plain.jsonl")) is JsonlWriter  # logging.tensorboard off
    assert not (tmp_path / "plain").exists()


def test_site_epochs_are_written_once_per_round_and_read_back(tmp_path):
    logdir = tmp_path / "site" / "tensorboard"
    write_epochs(logdir, "pretrain", [{"epoch": 0.0, "loss": 1.0, "lr": 0.1}, {"epoch": 1.0, "loss": 0.8, "lr": 0.2}])
    write_epochs(logdir, "pretrain", [{"epoch": 2.0, "loss": 0.7, "lr": 0.3}])  # the next round: a new event file
    board = _read(logdir)
    assert set(board.Tags()["scalars"]) == {"pretrain/loss", "pretrain/lr"}
    assert [(e.step, e.value) for e in board.Scalars("pretrain/loss")] == [(0, 1.0), (1, pytest.approx(0.8)),
                                                                           (2, pytest.approx(0.7))]  # fmt: skip
    with epoch_logger(None, "finetune") as off:
        assert off is None
    with epoch_logger(tmp_path / "cli", "finetune") as on_epoch:
        assert on_epoch is not None
        on_epoch({"epoch": 0.0, "loss": 0.6, "lr": 0.01, "accuracy": 0.5})
        assert set(_read(tmp_path / "cli").Tags()["scalars"]) == {"finetune/loss", "finetune/lr", "finetune/accuracy"}


def test_an_unwritable_folder_warns_once_and_training_goes_on(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    writer = ScalarWriter(blocked / "tb")
    with caplog.at_level(logging.WARNING, logger="endofed.io.tensorboard"):
        writer.add([Scalar("", "a/b", 1.0, 0)])
        writer.add([Scalar("", "a/b", 2.0, 1)])
        writer.flush()
        writer.close()
    assert [r.message for r in caplog.records if "TensorBoard logging" in r.message] != []
    assert len([r for r in caplog.records if "TensorBoard logging" in r.message]) == 1


def test_the_switch_is_on_by_default_and_can_be_turned_off():
    assert load_config().logging.tensorboard is True
    assert load_config(None, ["logging.tensorboard=false"]).logging.tensorboard is False


def test_rounds_of_one_process_read_back_in_order_after_many_event_files(tmp_path):
    # SummaryWriter names end in a per-process counter ('...pid.9' sorts after '...pid.10'): once a process has made
    # ten event files, a new file per round would be read before the earlier rounds' and its steps dropped.
    for i in range(11):
        write_epochs(tmp_path / f"other{i}", "pretrain", [{"epoch": 0.0, "loss": 1.0}])
    logdir = tmp_path / "site"
    for step in range(3):  # three rounds of one simulated site
        write_epochs(logdir, "pretrain", [{"epoch": float(step), "loss": 1.0 - step / 10}])
    assert [e.step for e in _read(logdir).Scalars("pretrain/loss")] == [0, 1, 2]
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1  # one file per process: nothing to sort
