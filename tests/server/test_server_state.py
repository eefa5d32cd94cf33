"""The coordinator's per-round state file: what --resume reads back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from endofed.config import FederationConfig
from endofed.federated.protocol import STATE_FILE
from endofed.io.checkpoint import metadata_path
from server.app import load_server_state, save_server_state
from server.strategies import make_strategy


def test_server_state_round_trips_weights_moments_claims_and_undefined_metrics(tmp_path):
    strategy = make_strategy(FederationConfig(strategy="fedadam"), "finetune", True, None)
    strategy.m_t = {"w": np.array([0.5, -0.5], np.float32)}  # type: ignore[attr-defined]
    strategy.v_t = {"w": np.array([0.25, 0.25], np.float32)}  # type: ignore[attr-defined]
    strategy._claims = {7: 12}
    strategy.last_evaluation = {7: {"auc": math.nan, "accuracy": 0.5}}  # AUC is undefined with one class
    weights = ArrayRecord({"w": Array(np.array([1.0, 2.0], np.float32))})
    save_server_state(tmp_path, "finetune", 3, weights, strategy, {"seed": 0})
    state = load_server_state(tmp_path, {"seed": 0})
    assert (state.phase, state.round) == ("finetune", 3)
    assert state.arrays["w"].numpy().tolist() == [1.0, 2.0] and state.arrays["w"].numpy().dtype == np.float32
    resumed = make_strategy(FederationConfig(strategy="fedadam"), "finetune", True, None)
    resumed.restore_state(state.strategy_arrays, state.strategy_meta, state.round)
    assert resumed.round_offset == 3 and resumed._claims == {7: 12}
    assert resumed.m_t["w"].tolist() == [0.5, -0.5] and resumed.v_t["w"].tolist() == [0.25, 0.25]  # type: ignore[attr-defined]
    assert math.isnan(resumed.last_evaluation[7]["auc"]) and resumed.last_evaluation[7]["accuracy"] == 0.5
    with pytest.raises(RuntimeError, match="saved with another experiment config"):
        load_server_state(tmp_path, {"seed": 1})
    with pytest.raises(RuntimeError, match="nothing to resume"):
        load_server_state(tmp_path / "elsewhere", {"seed": 0})


# ---------------------------------------------------------------------------- integrity: one hash over both files


def saved_state(out: Path, server_round: int = 3, claim: int = 12, weight: float = 1.0) -> Path:
    """A FedAvg state after ``server_round`` fine-tuning rounds of a 50-round plan, site 7 claiming ``claim``."""
    strategy = make_strategy(FederationConfig(strategy="fedavg"), "finetune", True, None)
    strategy._claims = {7: claim}
    weights = ArrayRecord({"w": Array(np.full(4, weight, np.float32))})
    save_server_state(out, "finetune", server_round, weights, strategy, PLAN)
    return out / STATE_FILE


PLAN = {"seed": 0, "federation": {"pretrain_rounds": 50, "finetune_rounds": 50}}


def edit_json(state: Path, change) -> None:  # type: ignore[no-untyped-def]
    record = json.loads(metadata_path(state).read_text())
    change(record)
    metadata_path(state).write_text(json.dumps(record, indent=2))


def test_a_clean_state_resumes(tmp_path):
    saved_state(tmp_path, server_round=3)
    state = load_server_state(tmp_path, PLAN)
    assert (state.phase, state.round, state.strategy_meta["claims"]) == ("finetune", 3, {"7": 12})


def test_an_edited_round_is_refused_naming_the_json(tmp_path):
    state = saved_state(tmp_path, server_round=3)
    edit_json(state, lambda record: record.update(round=40))  # would silently skip 37 rounds
    with pytest.raises(RuntimeError, match=r"server_state\.json is corrupt or was modified") as info:
        load_server_state(tmp_path, PLAN)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_an_edited_strategy_claim_is_refused(tmp_path):
    state = saved_state(tmp_path, claim=12)
    edit_json(state, lambda record: record["strategy"]["claims"].update({"7": 10**12}))
    with pytest.raises(RuntimeError, match=r"server_state\.json is corrupt or was modified"):
        load_server_state(tmp_path, PLAN)


def test_another_runs_tensor_file_is_refused(tmp_path):
    state = saved_state(tmp_path / "ours", weight=1.0)
    other = saved_state(tmp_path / "theirs", weight=-5.0)
    state.write_bytes(other.read_bytes())
    with pytest.raises(RuntimeError, match=r"ours/server_state\.safetensors is corrupt or was modified"):
        load_server_state(tmp_path / "ours", PLAN)


def test_a_torn_write_new_tensors_old_json_is_refused(tmp_path):
    state = saved_state(tmp_path, server_round=3, weight=1.0)
    old_json = metadata_path(state).read_text()
    saved_state(tmp_path, server_round=4, weight=2.0)  # round 4 written ...
    metadata_path(state).write_text(old_json)  # ... but the crash came before its JSON replaced round 3's
    with pytest.raises(RuntimeError, match=r"server_state\.safetensors is corrupt or was modified"):
        load_server_state(tmp_path, PLAN)


def test_a_state_of_format_1_is_refused(tmp_path):
    state = saved_state(tmp_path)
    edit_json(state, lambda record: (record.pop("metadata_sha256"), record.update(format_version=1)))
    with pytest.raises(RuntimeError, match=r"server_state\.safetensors was written by an older endofed .*format 1"):
        load_server_state(tmp_path, PLAN)


def test_the_server_app_and_the_pre_flight_refuse_with_the_same_line(tmp_path):
    from endofed.config import load_config, to_dict
    from endofed.errors import ConfigError
    from endofed.launch.resume_check import check_resume_state
    from tests.helpers import TINY

    experiment = load_config(TINY)
    strategy = make_strategy(FederationConfig(strategy="fedavg"), "pretrain", False, None)
    save_server_state(tmp_path, "pretrain", 1, ArrayRecord({"w": Array(np.ones(4, np.float32))}), strategy,
                      to_dict(experiment))  # fmt: skip
    assert check_resume_state(tmp_path, experiment) == ("pretrain", 1)
    edit_json(tmp_path / STATE_FILE, lambda record: record.update(round=2))
    with pytest.raises(ConfigError) as pre_flight:
        check_resume_state(tmp_path, experiment)
    with pytest.raises(RuntimeError) as server_app:
        load_server_state(tmp_path, to_dict(experiment))
    assert str(server_app.value) == str(pre_flight.value) and "server_state.json is corrupt" in str(pre_flight.value)
