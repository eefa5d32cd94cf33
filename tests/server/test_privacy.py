from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.supercore.task_identity import TaskIdentity

from endofed.config import FederationConfig
from endofed.federated.privacy import PrivacyLedger, epsilon_after
from endofed.io.jsonl import JsonlWriter
from server.privacy import PRIVACY_STATE, PrivateRounds, make_private
from server.replies import to_record
from server.strategies import make_strategy

DP = {
    "dp_noise_multiplier": 1.0,
    "dp_clipping_norm": 1.0,
    "min_sites": 2,
    "max_update_norm_ratio": 0.0,
}  # hand-made updates far beyond any honest one: the norm bound is off


class FakeGrid:
    """The part of Flower's Grid that configure_train uses: the connected nodes."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes, self.calls = nodes, 0

    def get_node_ids(self) -> list[int]:
        self.calls += 1
        return list(self.nodes)


class ZeroNoise:
    """A noise source without noise, to check the arithmetic of a release exactly."""

    def standard_normal(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)


def _record(**arrays: list[float] | np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()})


def _private(writer, fed, ledger=None, phase="pretrain", rng=None) -> PrivateRounds:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    strategy = make_strategy(fed, phase, phase == "finetune", writer)
    private = make_private(strategy, fed, ledger or PrivacyLedger.from_config(fed), rng or ZeroNoise())  # type: ignore[arg-type]
    assert isinstance(private, PrivateRounds)
    return private


@pytest.fixture()
def writer(tmp_path) -> JsonlWriter:
    return JsonlWriter(tmp_path / "rounds.jsonl")


def _round(private, server_round, base, replies):
    """configure_train for the reply nodes, then aggregate_train of ``(node, weights, num-examples)``."""
    grid = FakeGrid([node for node, _, _ in replies])
    sent = {m.metadata.dst_node_id: m for m in private.configure_train(server_round, base, ConfigRecord({}), grid)}
    messages = []
    for node, weights, volumes in replies:
        content = {"arrays": weights if isinstance(weights, ArrayRecord) else to_record({"w": np.float32(weights)}),
                   "metrics": MetricRecord({"num-examples": volumes})}  # fmt: skip
        messages.append(Message(RecordDict(content), reply_to=sent[node]))
    return private.aggregate_train(server_round, messages)


def _records(writer, event):
    lines = writer.path.read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_updates_are_clipped_and_averaged_with_equal_weights(writer):
    fed = FederationConfig(max_examples_per_site=100, **DP)
    private = _private(writer, fed)
    base = _record(w=[3.0, 4.0])
    # node 5 moves the weights by (4, 0): norm 4 > C = 1, scaled to (1, 0); node 6 by (0, 0.5): kept.
    arrays, _ = _round(private, 1, base, [(5, [7.0, 4.0], 10), (6, [3.0, 4.5], 30)])
    # the plain mean of the clipped updates (a volume-weighted mean would give [3.25, 4.375])
    np.testing.assert_allclose(arrays["w"].numpy(), [3.5, 4.25])
    assert private.aggregated_rounds == 1  # forwarded from the wrapped strategy (the total-failure check)
    (record,) = _records(writer, "privacy")
    assert record["epsilon"] == pytest.approx(epsilon_after(1.0, 1, 1e-5)) and record["delta"] == 1e-5
    assert (record["phase"], record["round"], record["released"]) == ("pretrain", 1, True)
    assert (record["noise_multiplier"], record["clipping_norm"], record["clipped_sites"]) == (1.0, 1.0, 1)
    assert record["nodes"] == [5, 6] and record["update_norms"] == pytest.approx([4.0, 0.5])
    (train,) = _records(writer, "train")  # the round log validated and logged both clipped updates
    assert sorted(site["node"] for site in train["sites"]) == [5, 6]


def test_rejected_and_missing_updates_count_as_zero_over_the_sites_asked(writer):
    fed = FederationConfig(max_examples_per_site=100, **DP)
    private = _private(writer, fed)
    base = _record(w=[3.0, 4.0])
    replies = [
        (5, [7.0, 4.0], 10),  # clipped to (1, 0)
        (6, [3.0, 4.5], 30),
        (7, [3.0, 4.1], 10**6),  # dropped by the screen before clipping: claims more volumes than the cap
        (8, _record(w=[3.0, 4.0], v=[1.0]), 10),  # malformed: dropped by the screen, not clipped
    ]
    arrays, _ = _round(private, 1, base, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [3.0 + 1 / 4, 4.0 + 0.5 / 4])  # 4 sites were asked
    (record,) = _records(writer, "privacy")
    assert (record["sites_asked"], record["sites_averaged"], record["nodes"]) == (4, 2, [5, 6])
    (train,) = _records(writer, "train")
    assert sorted(site["node"] for site in train["sites"]) == [5, 6]
    assert [r["node"] for r in train["rejected"]] == [7, 8]


def test_noise_std_is_z_c_over_the_sites_asked(writer):
    from flwr.supercore.differential_privacy import compute_stdv

    fed = FederationConfig(**{**DP, "dp_clipping_norm": 2.0})
    private = _private(writer, fed, rng=np.random.default_rng(3))
    base = _record(w=np.zeros(100_000))
    arrays, _ = _round(private, 1, base, [(5, np.zeros(100_000), 1), (6, np.zeros(100_000), 1)])
    noise = arrays["w"].numpy().astype(np.float64)
    assert abs(noise.std() - compute_stdv(1.0, 2.0, 2)) < 0.01 and abs(noise.mean()) < 0.01  # std 1.0


def test_one_ledger_spans_both_phases_and_matches_flowers_accountant(writer):
    from flwr.serverapp import GaussianPrivacyEvent, PrivacyConfig, RdpAccountant
    from flwr.supercore.privacy_accounting import NeighboringRelation, SamplingMethod

    fed = FederationConfig(**DP)
    ledger = PrivacyLedger.from_config(fed)
    pretrain = _private(writer, fed, ledger, "pretrain")
    finetune = _private(writer, fed, ledger, "finetune")
    base = _record(w=[0.0, 0.0])
    _round(pretrain, 1, base, [(5, [0.1, 0.0], 1), (6, [0.0, 0.1], 1)])
    for server_round in (1, 2):
        _round(finetune, server_round, base, [(5, [0.1, 0.0], 1), (6, [0.0, 0.1], 1)])
    config = PrivacyConfig(1e-5, 2, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    flower = RdpAccountant(config)
    flower.compose(GaussianPrivacyEvent(1.0, 2, 2), 3)
    records = _records(writer, "privacy")
    assert [(r["phase"], r["round"]) for r in records] == [("pretrain", 1), ("finetune", 1), ("finetune", 2)]
    assert [r["epsilon"] for r in records] == pytest.approx([epsilon_after(1.0, t, 1e-5) for t in (1, 2, 3)])
    assert ledger.releases == 3 and ledger.epsilon == pytest.approx(flower.get_epsilon(1e-5), rel=1e-12)


def test_a_round_whose_release_would_exceed_the_cap_is_refused_before_sites_are_asked(writer):
    fed = FederationConfig(**DP, dp_max_epsilon=epsilon_after(1.0, 2, 1e-5))
    private = _private(writer, fed)
    base = _record(w=[0.0])
    for server_round in (1, 2):
        _round(private, server_round, base, [(5, [0.1], 1), (6, [0.2], 1)])
    grid = FakeGrid([5, 6])
    with pytest.raises(PrivacyBudgetExhausted, match="2 releases spent epsilon=.*dp_max_epsilon"):
        private.configure_train(3, base, ConfigRecord({}), grid)
    assert grid.calls == 0 and private.ledger.releases == 2


def test_a_round_without_valid_updates_releases_nothing_and_spends_nothing(writer):
    fed = FederationConfig(max_examples_per_site=100, **DP)
    private = _private(writer, fed)
    arrays, _ = _round(private, 1, _record(w=[0.0]), [(5, [0.1], 10**6), (6, [0.2], 10**6)])
    assert arrays is None and private.ledger.releases == 0 and private.aggregated_rounds == 0
    (record,) = _records(writer, "privacy")
    assert (record["released"], record["epsilon"], record["update_norms"]) == (False, 0.0, [])  # none clipped
    (train,) = _records(writer, "train")
    assert [r["node"] for r in train["rejected"]] == [5, 6] and not train["aggregated"]


def test_the_ledger_travels_with_the_server_state(writer):
    fed = FederationConfig(**DP)
    private = _private(writer, fed)
    _round(private, 1, _record(w=[0.0]), [(5, [0.1], 1), (6, [0.2], 1)])
    arrays, meta = private.export_state()
    assert meta[PRIVACY_STATE]["releases"] == 1
    resumed = _private(writer, fed)
    resumed.restore_state(arrays, meta, completed_rounds=1)
    # 1 saved + 1 for the interrupted round, whose noisy weights may have reached the sites unsaved (conservative)
    assert resumed.ledger.releases == 2 and resumed.round_offset == 1


def test_make_private_only_wraps_averaging_strategies_under_dp():
    plain = make_strategy(FederationConfig(), "pretrain", False, None)
    assert make_private(plain, FederationConfig(), None) is plain  # DP off: unchanged
    for name in ("fedadam", "trimmed_mean"):
        fed = FederationConfig(strategy=name, **DP)
        with pytest.raises(ValueError, match="needs a FedAvg or FedProx strategy"):
            make_private(make_strategy(fed, "pretrain", False, None), fed, PrivacyLedger.from_config(fed))
    fed = FederationConfig(strategy="fedprox", **DP)
    assert isinstance(make_private(make_strategy(fed, "pretrain", False, None), fed, PrivacyLedger(1.0, 1e-5)),
                      PrivateRounds)  # fmt: skip
    with pytest.raises(ValueError, match="PrivacyLedger"):
        make_private(make_strategy(fed, "pretrain", False, None), fed, None)
