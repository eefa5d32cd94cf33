from __future__ import annotations

import pytest
from flwr.app import MetricRecord, RecordDict

from endofed.config import FederationConfig
from endofed.federated.strategies import DP_COMPATIBLE, DP_STRATEGIES, STRATEGIES
from server.privacy import _averages
from server.strategies import (
    STRATEGY_CLASSES,
    LoggedFedAdam,
    LoggedFedAvg,
    LoggedFedMedian,
    LoggedFedProx,
    LoggedFedTrimmedAvg,
    average_metrics,
    make_strategy,
)


def test_metric_average_is_weighted_by_volumes_and_drops_the_site_tag():
    records = [
        RecordDict({"metrics": MetricRecord({"num-examples": 1, "train-loss": 2.0, "partition-id": 0})}),
        RecordDict({"metrics": MetricRecord({"num-examples": 3, "train-loss": 6.0, "partition-id": 1})}),
    ]
    averaged = average_metrics(records, "num-examples")
    assert dict(averaged) == {"train-loss": pytest.approx((1 * 2.0 + 3 * 6.0) / 4)}


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fedavg", LoggedFedAvg),
        ("fedprox", LoggedFedProx),
        ("fedadam", LoggedFedAdam),
        ("trimmed_mean", LoggedFedTrimmedAvg),
        ("median", LoggedFedMedian),
    ],
)
def test_make_strategy_waits_for_every_site(name, cls):
    fed = FederationConfig(strategy=name, min_sites=3, quorum=2, proximal_mu=0.5, node_wait_s=60)
    strategy = make_strategy(fed, "pretrain", False, None)
    assert type(strategy) is cls
    # Flower's unbounded waits are set to the quorum; the strategy's own bounded wait asks for every site first.
    assert strategy.min_train_nodes == 2 and strategy.min_available_nodes == 2  # type: ignore[attr-defined]
    assert (strategy.wanted_sites, strategy.quorum, strategy.node_wait_s) == (3, 2, 60)
    assert strategy.fraction_evaluate == 0.0 and strategy.phase == "pretrain"  # type: ignore[attr-defined]
    if name == "fedprox":
        assert strategy.proximal_mu == 0.5  # type: ignore[attr-defined]


def test_the_registry_has_a_class_for_exactly_the_configurable_names_and_their_dp_flags_hold():
    assert tuple(STRATEGY_CLASSES) == STRATEGIES
    assert DP_STRATEGIES == ("fedavg", "fedprox")
    for name, cls in STRATEGY_CLASSES.items():
        assert cls.strategy_name == name
        strategy = make_strategy(FederationConfig(strategy=name), "pretrain", False, None)
        assert type(strategy) is cls and strategy.strategy_name == name
        # DP-compatible <=> the round log hands its kept replies to FedAvg's mean (what the DP release sums)
        assert _averages(strategy) is DP_COMPATIBLE[name], name


def test_the_coordinator_imports_no_training_code():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, server.strategies, server.privacy; "
        "print(sorted(m for m in sys.modules if m.startswith('endofed.training')))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout.strip() == "[]"


def test_finetune_phase_can_use_its_own_strategy():
    fed = FederationConfig(strategy="fedavg", finetune_strategy="fedprox", proximal_mu=0.25)
    assert type(make_strategy(fed, "pretrain", False, None)) is LoggedFedAvg
    finetune = make_strategy(fed, "finetune", True, None)
    assert type(finetune) is LoggedFedProx and finetune.proximal_mu == 0.25  # type: ignore[attr-defined]
    assert type(make_strategy(FederationConfig(strategy="fedadam"), "finetune", True, None)) is LoggedFedAdam


def test_bf16_wire_format_halves_bytes_and_decodes_to_float32():
    import numpy as np

    values = np.linspace(-2, 2, 64, dtype=np.float32).reshape(8, 8)
    strategy = make_strategy(FederationConfig(transport="bf16"), "pretrain", False, None)
    wire = strategy.prepare_round(_record(w=values.tolist(), b=[0.5]))
    assert list(wire) == ["packed/uint16"]  # w and b packed into one array (b first: sorted keys)
    packed = wire["packed/uint16"].numpy()
    assert packed.dtype == np.uint16 and packed.shape == (65,) and strategy.bytes_down(5) == 65 * 2
    assert packed[0] == 0x3F00  # 0.5 in bfloat16
    back = strategy._sent["w"]
    assert back.dtype == np.float32 and back.shape == (8, 8)
    np.testing.assert_allclose(back, values, rtol=2**-8)


def _record(**arrays: list[float]):
    """Weights as the server holds them (the global weights; one Flower ``Array`` per entry)."""
    import numpy as np
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.array(v, dtype=np.float32)) for k, v in arrays.items()})


def _wire(**arrays: list[float]):
    """fp32 weights as a reply carries them: packed (endofed.federated.packing)."""
    import numpy as np

    from server.replies import to_record

    return to_record({k: np.array(v, dtype=np.float32) for k, v in arrays.items()})


def _train_messages(*nodes: int):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    return [Message(RecordDict({"config": ConfigRecord({"phase": "pretrain"})}), message_type=MessageType.TRAIN,
                    dst_node_id=node) for node in nodes]  # fmt: skip


def test_delta_int8_down_link_bf16_first_then_int8_to_holders_and_fp32_to_the_rest():
    import numpy as np

    from endofed.federated.bytes import from_transport, payload_layout, to_transport
    from endofed.federated.packing import unpack
    from server.replies import to_record

    _identity()  # Flower's Message needs a run id
    strategy = make_strategy(FederationConfig(transport="delta_int8"), "pretrain", False, None)
    assert (strategy.down, strategy.up) == ("delta_int8", "delta_int8")
    master = _record(w=[1.0 + 2**-10, 2.0, -0.5, 0.0])  # 1 + 2^-10 is not a bfloat16
    strategy.prepare_round(master)
    first = strategy.address(_train_messages(5, 6))
    assert [m.content["config"]["down-codec"] for m in first] == ["bf16", "bf16"]  # no site holds a base yet
    assert list(first[0].content["arrays"]) == ["packed/uint16"] and strategy.bytes_down(5) == 4 * 2
    assert "base-digest" not in first[0].content["config"] and first[0].content["config"]["phase"] == "pretrain"
    sent = {"w": np.array([1.0, 2.0, -0.5, 0.0], dtype=np.float32)}  # what the site decodes: the view
    np.testing.assert_array_equal(strategy._sent["w"], sent["w"])
    trained = {"w": sent["w"] + np.array([0.0254, -0.01, 0.001, 0.0], dtype=np.float32)}
    payload = to_record(to_transport(trained, "delta_int8", sent))
    assert list(payload) == ["packed/float32", "packed/int8"] and payload["packed/int8"].numpy().tolist() == [
        127,
        -50,
        5,
        0,
    ]
    decoded = strategy.decode_reply(payload)["w"].numpy()
    assert decoded.dtype == np.float32
    # master + delta (not view + delta): the 2^-10 the down-link rounded away is kept
    np.testing.assert_allclose(decoded, [1.0 + 2**-10 + 0.0254, 1.99, -0.499, 0.0], atol=1e-6)

    strategy.confirm(5)  # node 5 answered round 1; node 6 did not
    strategy.prepare_round(_record(w=[1.0 + 2**-10 + 0.0254, 1.99, -0.499, 0.0]))
    second = {m.metadata.dst_node_id: m for m in strategy.address(_train_messages(5, 6))}
    delta, full = second[5].content, second[6].content
    assert delta["config"]["down-codec"] == "delta_int8" and full["config"]["down-codec"] == "fp32"
    assert delta["config"]["view-digest"] == full["config"]["view-digest"]  # both end up holding the same view
    assert strategy.bytes_down(5) == 4 * 1 + 4 and strategy.bytes_down(6) == 4 * 4  # int8 + scale / fp32
    arrays = unpack({k: v.numpy() for k, v in delta["arrays"].items()}, payload_layout({"w": (4,)}, "delta_int8"))
    view = from_transport(arrays, "delta_int8", sent)
    np.testing.assert_array_equal(view["w"], full["arrays"]["packed/float32"].numpy())
    np.testing.assert_array_equal(view["w"], strategy._sent["w"])


def test_unchanged_delta_reply_gives_back_the_master_exactly():
    from endofed.federated.bytes import zero_delta
    from server.replies import to_record

    strategy = make_strategy(FederationConfig(transport="delta_int8"), "pretrain", False, None)
    master = _record(w=[0.1, 0.2, 0.3], b=[1e-3])
    strategy.prepare_round(master)
    echo = to_record(zero_delta({"w": (3,), "b": (1,)}))
    decoded = strategy.decode_reply(echo)
    assert all((decoded[k].numpy() == master[k].numpy()).all() for k in ("w", "b"))


def test_undecodable_replies_are_refused_with_a_reason():
    import numpy as np

    from server.replies import to_record

    strategy = make_strategy(FederationConfig(transport="delta_int8"), "pretrain", False, None)
    strategy.prepare_round(_record(w=[0.1, 0.2]))
    whole_weights = _wire(w=[0.1, 0.2])  # float32 weights instead of a delta
    with pytest.raises(ValueError, match=r"missing \['packed/int8'\]"):
        strategy.decode_reply(whole_weights)
    wrong_shape = to_record({"w": np.zeros(3, dtype=np.int8), "w#scale": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match=r"'packed/int8' is int8 \(3,\), expected int8 \(2,\)"):
        strategy.decode_reply(wrong_shape)
    negative_scale = to_record({"w": np.zeros(2, dtype=np.int8), "w#scale": -np.ones(1, np.float32)})
    with pytest.raises(ValueError, match="must be one finite scale >= 0"):
        strategy.decode_reply(negative_scale)
    fp32 = make_strategy(FederationConfig(transport="fp32"), "pretrain", False, None)
    fp32.prepare_round(_record(w=[0.1, 0.2]))
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        fp32.decode_reply(_wire(w=[0.1, float("nan")]))


def test_fedavg_round_of_int8_deltas_by_hand(tmp_path):
    import json

    import numpy as np
    from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from endofed.federated.bytes import to_transport
    from endofed.io.jsonl import JsonlWriter
    from server.replies import to_record

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    writer = JsonlWriter(tmp_path / "rounds.jsonl")
    strategy = make_strategy(FederationConfig(transport="delta_int8", min_sites=2), "pretrain", False, writer)
    strategy.prepare_round(_record(w=[1.0 + 2**-10, 2.0]))
    strategy.address(_train_messages(5, 6, 7))
    sent = strategy._sent
    replies = []
    for node, delta, volumes in ((5, [0.01, 0.0], 1), (6, [0.0, -0.02], 3), (7, None, 4)):
        msg = Message(RecordDict({"config": ConfigRecord({})}), message_type=MessageType.TRAIN, dst_node_id=node)
        if delta is None:  # a broken site: whole float32 weights instead of a delta -> dropped, not averaged
            payload = {"w": sent["w"] + 5}
        else:
            payload = to_transport({"w": sent["w"] + np.array(delta, dtype=np.float32)}, "delta_int8", sent)
        content = {"arrays": to_record(payload), "metrics": MetricRecord({"num-examples": volumes})}
        replies.append(Message(RecordDict(content), reply_to=msg))
    arrays, _ = strategy.aggregate_train(1, replies)
    # master + weighted mean delta: 1 + 2^-10 + 0.01 * 1/4 and 2 - 0.02 * 3/4
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0 + 2**-10 + 0.0025, 1.985], atol=1e-6)
    record = json.loads((tmp_path / "rounds.jsonl").read_text().splitlines()[0])
    assert record["failures"] == 0 and sorted(s["node"] for s in record["sites"]) == [5, 6]
    assert [r["node"] for r in record["rejected"]] == [7] and "packed/int8" in record["rejected"][0]["reason"]
    assert {(s["bytes_down"], s["bytes_up"]) for s in record["sites"]} == {(2 * 2, 2 * 1 + 4)}  # bf16 / int8 + scale


def test_updates_beyond_the_bounds_are_dropped_and_the_round_goes_on(tmp_path):
    import json

    import numpy as np
    from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from endofed.io.jsonl import JsonlWriter

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    writer = JsonlWriter(tmp_path / "rounds.jsonl")
    fed = FederationConfig(min_sites=2, quorum=1, max_update_norm_ratio=0.5, max_examples_per_site=100)
    strategy = make_strategy(fed, "pretrain", False, writer)

    def round_of(server_round, replies):
        strategy.prepare_round(_record(w=[3.0, 4.0]))  # norm 5: an update may move the weights by <= 2.5
        messages = []
        for node, weights, volumes in replies:
            msg = Message(RecordDict({"config": ConfigRecord({})}), message_type=MessageType.TRAIN, dst_node_id=node)
            content = {"arrays": _wire(w=weights), "metrics": MetricRecord({"num-examples": volumes})}
            messages.append(Message(RecordDict(content), reply_to=msg))
        arrays, _ = strategy.aggregate_train(server_round, messages)
        lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
        return arrays["w"].numpy(), sorted(s["node"] for s in json.loads(lines[-1])["sites"])

    # node 7 moved the weights by 10 (ratio 2 > 0.5); node 8 claims a million volumes (cap 100)
    weights, kept = round_of(
        1, [(5, [3.0, 5.0], 10), (6, [4.0, 4.0], 30), (7, [9.0, 12.0], 10), (8, [3.0, 4.0], 10**6)]
    )
    assert kept == [5, 6]
    np.testing.assert_allclose(weights, [3.75, 4.25])  # (10 * [3, 5] + 30 * [4, 4]) / 40
    # node 5 now claims 5 times more volumes than in round 1: dropped; node 6 keeps its claim
    weights, kept = round_of(2, [(5, [3.0, 6.0], 50), (6, [3.0, 3.0], 30)])
    assert kept == [6]
    np.testing.assert_allclose(weights, [3.0, 3.0])


class _Grid:
    """Stands in for Flower's Grid where only the connected node ids matter (configure_* samples them)."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def _replies(messages, updates):
    """One reply per message: the site's weights ``updates[node]`` and 10 volumes."""
    from flwr.app import Message, MetricRecord, RecordDict

    return [
        Message(
            RecordDict(
                {"arrays": _wire(w=updates[m.metadata.dst_node_id]), "metrics": MetricRecord({"num-examples": 10})}
            ),
            reply_to=m,
        )  # fmt: skip
        for m in messages
    ]


# Hand-made updates below move the weights far more than an honest site (ratio 0.02): the tests that are not about
# the norm bound switch it off (max_update_norm_ratio=0.0).


def _identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def test_fedadam_resumed_from_exported_state_continues_bitwise_like_an_uninterrupted_run():
    import numpy as np
    from flwr.app import ConfigRecord

    _identity()
    fed = FederationConfig(strategy="fedadam", min_sites=2, max_update_norm_ratio=0.0)
    sites = {5: [0.5, 1.5], 6: [1.0, -1.0]}
    rounds = [{n: [v + 0.1 * r for v in w] for n, w in sites.items()} for r in range(3)]

    def run(strategy, arrays, first, last):
        for server_round in range(first, last + 1):
            messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), _Grid([5, 6])))
            sent_round = messages[0].content["config"]["server-round"]  # the sites train for the round they are told
            arrays, _ = strategy.aggregate_train(server_round, _replies(messages, rounds[sent_round - 1]))
        return arrays, messages

    straight, _ = run(make_strategy(fed, "pretrain", False, None), _record(w=[0.0, 0.0]), 1, 3)
    first = make_strategy(fed, "pretrain", False, None)
    after_one, _ = run(first, _record(w=[0.0, 0.0]), 1, 1)
    moments, meta = first.export_state()
    assert sorted(moments) == ["m_t.w", "v_t.w"] and meta["claims"] == {"5": 10, "6": 10}
    resumed = make_strategy(fed, "pretrain", False, None)
    resumed.restore_state(moments, meta, completed_rounds=1)
    final, messages = run(resumed, after_one, 1, 2)  # Flower's loop counts from 1 again
    assert messages[0].content["config"]["server-round"] == 3  # the sites see the uninterrupted run's numbers
    assert np.array_equal(final["w"].numpy(), straight["w"].numpy())
    # Without the moments (what a plain restart from the saved weights would do) the result differs.
    fresh = make_strategy(fed, "pretrain", False, None)
    fresh.round_offset = 1
    other, _ = run(fresh, after_one, 1, 2)
    assert not np.array_equal(other["w"].numpy(), straight["w"].numpy())


def test_a_round_below_the_quorum_keeps_the_global_weights_and_says_so(tmp_path):
    import json

    from flwr.app import ConfigRecord

    from endofed.io.jsonl import JsonlWriter

    _identity()
    fed = FederationConfig(min_sites=3, quorum=2, node_wait_s=1, max_update_norm_ratio=0.0)
    strategy = make_strategy(fed, "pretrain", False, JsonlWriter(tmp_path / "rounds.jsonl"))
    messages = list(strategy.configure_train(1, _record(w=[1.0, 1.0]), ConfigRecord({}), _Grid([5, 6])))
    assert len(messages) == 2  # after the 1 s wait for the third site, the round went on with the two there
    replies = _replies(messages, {5: [2.0, 2.0], 6: [float("nan"), 0.0]})  # node 6's update is broken
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is None  # one valid update < quorum 2: Flower keeps the previous global weights
    assert strategy.aggregated_rounds == 0  # what the ServerApp's total-failure check counts
    record = json.loads((tmp_path / "rounds.jsonl").read_text())
    assert record["aggregated"] is False and [r["node"] for r in record["rejected"]] == [6]
    assert [s["node"] for s in record["sites"]] == [5] and record["sites"][0]["update_norm_ratio"] == 1.0
    with pytest.raises(Exception, match="only 1 of 3 sites connected"):
        strategy.configure_train(2, _record(w=[1.0, 1.0]), ConfigRecord({}), _Grid([5]))
    replies = _replies(messages, {5: [2.0, 2.0], 6: [3.0, 3.0]})
    assert strategy.aggregate_train(1, replies)[0] is not None and strategy.aggregated_rounds == 1


# median of {1, 2, 3, 2, 1000} = 2 (and 20 for the second coordinate); trimming 20% (one site) at each end
# leaves {2, 2, 3} -> 7/3 and {10, 20, 20} -> 50/3
@pytest.mark.parametrize(("name", "expected"), [("median", [2.0, 20.0]), ("trimmed_mean", [7 / 3, 50 / 3])])
def test_robust_aggregation_ignores_a_site_that_passes_every_check_but_is_far_off(name, expected):
    from flwr.app import ConfigRecord

    _identity()
    # Five sites; node 9 sends a finite, well-formed update far from the others (no norm bound configured).
    updates = {5: [1.0, 10.0], 6: [2.0, 20.0], 7: [3.0, 30.0], 8: [2.0, 20.0], 9: [1000.0, -1000.0]}
    off = {"min_sites": 5, "max_update_norm_ratio": 0.0}
    strategy = make_strategy(FederationConfig(strategy=name, **off), "pretrain", False, None)
    messages = list(strategy.configure_train(1, _record(w=[0.0, 0.0]), ConfigRecord({}), _Grid(list(updates))))
    arrays, _ = strategy.aggregate_train(1, _replies(messages, updates))
    assert arrays["w"].numpy().tolist() == pytest.approx(expected)
    plain = make_strategy(FederationConfig(strategy="fedavg", **off), "pretrain", False, None)
    messages = list(plain.configure_train(1, _record(w=[0.0, 0.0]), ConfigRecord({}), _Grid(list(updates))))
    averaged, _ = plain.aggregate_train(1, _replies(messages, updates))
    assert averaged["w"].numpy()[0] == pytest.approx(1008 / 5)  # the plain mean is dragged off by one site
