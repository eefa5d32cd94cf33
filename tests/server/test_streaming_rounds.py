"""In-place aggregation: replies are added up as they arrive, dropped, and the result does not depend on order."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from endofed.config import FederationConfig
from server.replies import to_record
from server.strategies import make_strategy
from server.stream import StreamingGrid

MASTER = np.linspace(-1, 1, 300, dtype=np.float32)


class _Grid:
    """Flower's Grid where only the node ids matter (configure_* samples them)."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def _updates(count: int) -> dict[int, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(1)
    return {
        100 + i: ((MASTER + rng.normal(0, 1e-3, MASTER.size)).astype(np.float32), int(rng.integers(1, 50)))
        for i in range(count)
    }


def _reply(message: Message, weights: np.ndarray, volumes: int) -> Message:
    content = {"arrays": to_record({"w": weights.copy()}), "metrics": MetricRecord({"num-examples": volumes})}
    return Message(RecordDict(content), reply_to=message)


def _round(name: str, order: list[int], updates, **fed) -> np.ndarray:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    config = FederationConfig(strategy=name, min_sites=2, max_update_norm_ratio=0.0, **fed)
    strategy = make_strategy(config, "pretrain", False, None)
    master = ArrayRecord({"w": Array(MASTER.copy())})
    messages = {m.metadata.dst_node_id: m for m in strategy.configure_train(1, master, ConfigRecord({}), _Grid(order))}
    replies = (_reply(messages[node], *updates[node]) for node in order)  # a generator, like StreamingGrid's
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None
    return arrays["w"].numpy()


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "trimmed_mean", "median"])
def test_the_aggregate_is_bitwise_the_same_in_any_arrival_order(name):
    updates = _updates(6)
    nodes = sorted(updates)
    first = _round(name, nodes, updates)
    for seed in range(3):
        order = list(np.random.default_rng(seed).permutation(nodes))
        assert np.array_equal(_round(name, [int(n) for n in order], updates), first), (name, order)


def test_the_streamed_fedavg_is_the_exact_weighted_mean_and_flowers_all_at_once_is_within_one_ulp():
    updates = _updates(7)
    streamed = _round("fedavg", sorted(updates), updates)
    total = sum(volumes for _, volumes in updates.values())
    exact = (sum(np.float64(v) * w.astype(np.float64) for w, v in updates.values()) / total).astype(np.float32)
    np.testing.assert_array_equal(streamed, exact)  # no rounding beyond float64's here
    contents = [RecordDict({"arrays": ArrayRecord({"w": Array(w)}), "metrics": MetricRecord({"num-examples": v})})
                for w, v in updates.values()]  # fmt: skip
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    flower = aggregate_arrayrecords(contents, "num-examples")["w"].numpy()  # float32 sum, all replies held
    assert np.abs(flower.view(np.int32).astype(np.int64) - streamed.view(np.int32)).max() <= 4
    assert FedAvg  # the strategy class whose aggregation this replaces


def test_each_reply_is_dropped_once_added_so_memory_does_not_grow_with_the_sites():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    updates = _updates(8)
    strategy = make_strategy(FederationConfig(min_sites=2, max_update_norm_ratio=0.0), "pretrain", False, None)
    master = ArrayRecord({"w": Array(MASTER.copy())})
    messages = list(strategy.configure_train(1, master, ConfigRecord({}), _Grid(sorted(updates))))
    alive: list[weakref.ref] = []
    most_alive = 0

    def arriving():
        nonlocal most_alive
        for message in messages:
            gc.collect()
            most_alive = max(most_alive, sum(ref() is not None for ref in alive))
            reply = _reply(message, *updates[message.metadata.dst_node_id])
            alive.append(weakref.ref(reply.content["arrays"]))
            yield reply

    arrays, _ = strategy.aggregate_train(1, arriving())
    assert arrays is not None and most_alive <= 1  # never more than the reply being added


def test_a_buffering_strategy_refuses_a_round_that_would_not_fit_its_bound():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    fed = FederationConfig(strategy="median", min_sites=2, max_buffered_mb=1)
    strategy = make_strategy(fed, "pretrain", False, None)
    big = ArrayRecord({"w": Array(np.zeros(200_000, np.float32))})  # 0.8 MB: two sites need 1.6 MB
    with pytest.raises(ValueError, match=r"median holds every site's update at once: 2 sites x 1 MB = 2 MB, above"):
        strategy.configure_train(1, big, ConfigRecord({}), _Grid([1, 2]))
    streaming = make_strategy(FederationConfig(strategy="fedavg", min_sites=2, max_buffered_mb=1), "pretrain", False,
                              None)  # fmt: skip
    assert len(list(streaming.configure_train(1, big, ConfigRecord({}), _Grid([1, 2])))) == 2  # no bound needed


class _PullGrid:
    """A grid whose replies become ready on a schedule: pull number -> ids that are ready by then."""

    def __init__(self, ready_after: dict[str, int]):
        self.ready_after, self.pulls, self.asked = ready_after, 0, []

    def push_messages(self, messages):
        return [*self.ready_after, None]  # a message that could not be pushed comes back as None

    def pull_messages(self, message_ids):
        self.pulls += 1
        self.asked.append(list(message_ids))
        found = []
        for message_id in message_ids:
            if self.ready_after[message_id] <= self.pulls:
                self.ready_after[message_id] = 10**9  # pulled once
                request = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=1)
                request.metadata.__dict__["_message_id"] = message_id
                found.append(Message(RecordDict(), reply_to=request))
        return found

    def get_node_ids(self):
        return [1]


def test_the_streaming_grid_yields_replies_as_they_come_a_few_ids_per_pull():
    grid = _PullGrid({f"m{i}": (1 if i < 5 else 8) for i in range(6)})
    replies = StreamingGrid(grid, batch=2, poll_s=0.0).send_and_receive([], timeout=60)
    first = next(replies)
    assert first.metadata.reply_to_message_id == "m0" and grid.pulls == 1  # the first reply, before the rest
    assert [r.metadata.reply_to_message_id for r in replies] == ["m1", "m2", "m3", "m4", "m5"]
    assert max(len(ids) for ids in grid.asked) == 2 and grid.asked[3] == ["m5"]  # later sweeps ask for m5 only
    assert StreamingGrid(grid).get_node_ids() == [1]  # everything else is Flower's grid


def test_the_streaming_grid_stops_at_the_timeout_with_what_it_has():
    grid = _PullGrid({"a": 1, "b": 10**6})
    got = list(StreamingGrid(grid, poll_s=0.01).send_and_receive([], timeout=0.2))
    assert [r.metadata.reply_to_message_id for r in got] == ["a"]


class _WindowGrid:
    """A grid whose messages are their own ids; a pushed message's reply is ready at the next pull ("bad" fails)."""

    def __init__(self):
        self.pushes, self.out, self.most_out = [], set(), 0

    def push_messages(self, messages):
        self.pushes.append(list(messages))
        ids = [None if m == "bad" else m for m in messages]
        self.out |= {i for i in ids if i}
        self.most_out = max(self.most_out, len(self.out))
        return ids

    def pull_messages(self, message_ids):
        found = []
        for message_id in message_ids:
            if message_id in self.out:
                self.out.discard(message_id)
                request = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=1)
                request.metadata.__dict__["_message_id"] = message_id
                found.append(Message(RecordDict(), reply_to=request))
        return found


def test_a_window_keeps_at_most_that_many_messages_out_and_sends_the_next_as_replies_come():
    grid = _WindowGrid()
    replies = StreamingGrid(grid, batch=4, poll_s=0.0, window=2).send_and_receive(["a", "b", "bad", "c", "d", "e"])
    assert [r.metadata.reply_to_message_id for r in replies] == ["a", "b", "c", "d", "e"]
    # 2 out, both answered in one sweep: "bad" could not be pushed, so "c" fills its place, then "d", then "e"
    assert grid.pushes == [["a", "b"], ["bad", "c"], ["d"], ["e"]] and grid.most_out == 2


def test_without_a_window_every_message_is_pushed_at_once():
    grid = _WindowGrid()
    replies = StreamingGrid(grid, poll_s=0.0).send_and_receive(["a", "b", "c"])
    assert len(list(replies)) == 3 and grid.pushes == [["a", "b", "c"]] and grid.most_out == 3
    with pytest.raises(ValueError, match="window must be >= 0"):
        StreamingGrid(grid, window=-1)
