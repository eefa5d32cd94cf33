"""The coordinator's per-round state file: what --resume reads back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from endofed.config import FederationConfig
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
