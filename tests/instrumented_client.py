"""An instrumented ClientApp for tests and benchmarks only: the production one plus an echo baseline and faults.

The shipped bundle runs ``client.app:app`` (the outgoing audit, then endofed's train/evaluate). This app
registers the same handlers behind two more mods, and it is never part of the bundle a hospital receives:
:func:`tests.instrumented.build_instrumented_app` lays out a separate Flower app folder for it.

* ``echo`` (run-config key ``echo = true``): reply with as many bytes as a real reply and do no training, to
  measure Flower's own cost per round (``benchmarks/federation_overhead.py``). With ``echo-busy-s = S`` it first
  keeps the CPU busy for S seconds (matrix products on torch's threads, as training would) and reports them as its
  training time: on one machine shared by several sites, a site's training slows the others' start-up and
  transfers, and an idle echo would leave that out of the baseline.
* ``inject-fault`` (SuperNode ``--node-config 'inject-fault="nan@2,norm@3"'``): spoil this site's own training
  reply in the named pre-training rounds, after its outgoing audit, as a hostile site would
  (``tests/test_resilience.py``; see :mod:`endofed.federated.faults`).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from client import app as production
from endofed.federated.faults import NODE_CONFIG_KEY, Reply, leaking_exception, parse_fault_plan, spoil
from endofed.federated.packing import PACKED_PREFIX, wire_layout
from endofed.federated.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    PHASE,
    PRETRAIN,
    SERVER_ROUND,
    T_STARTUP,
    TRAIN_SECONDS,
)
from endofed.federated.runconfig import experiment_config
from endofed.federated.weights import shared_shapes

ECHO = "echo"  # run-config key of the echo baseline
ECHO_BUSY_S = "echo-busy-s"  # run-config key: seconds the echo keeps the CPU busy per train message (as training)
ECHO_STEP = 1e-6  # scale of the echo's delta reply: moves each weight by at most 127e-6 per round


def echo_reply(msg: Message, context: Context) -> ArrayRecord:
    """The echo baseline's arrays: the same packed layout and as many new bytes as a real reply, and no training.

    Flower stores arrays by content hash and does not move an object the other side already holds, and it moves
    every array (and each 5 MiB chunk of one) as its own object (one HTTP request each), so a fair baseline sends
    the same arrays as a real reply with new content, not just as many bytes: the received packed arrays rolled
    by one element. A delta reply carries the low bytes of the rolled received values (never 0) and a small scale
    of its own per entry and round (:data:`ECHO_STEP`), so that, like a real update, it moves every weight of the
    global a little and the next round's down-link delta is all new bytes too.
    """
    received = {k: v.numpy() for k, v in msg.content[ARRAYS].items()}
    if production.reply_mode(msg) != "delta_int8":  # fp32 / bf16: the reply has the received layout
        return ArrayRecord({k: Array(np.roll(v, 1)) for k, v in received.items()})
    cfg = experiment_config(context.run_config, production.APP_DIR)
    layout = wire_layout(shared_shapes(cfg.model, cfg.data.roi_size), "delta_int8")
    server_round = int(msg.content[CONFIG].get(SERVER_ROUND, 0))
    weights = max(received.values(), key=lambda value: value.size)  # every weight, in the down-link's codec
    # the low bytes (new content, a delta's bytes), never 0: every weight moves, as training moves them all
    values = np.roll(weights, 1).astype(np.int8) | np.int8(1)
    entries = np.arange(layout[PACKED_PREFIX + "float32"].shape[0], dtype=np.float32)
    scales = (ECHO_STEP * (1 + 1e-3 * entries) * (1 + 1e-2 * server_round)).astype(np.float32)
    return ArrayRecord({PACKED_PREFIX + "int8": Array(values), PACKED_PREFIX + "float32": Array(scales)})


def keep_busy(seconds: float) -> float:
    """Matrix products on torch's CPU threads for ``seconds`` (0: none); returns the seconds spent."""
    started = time.perf_counter()
    if seconds > 0:
        matrix = torch.rand(256, 256)
        while time.perf_counter() - started < seconds:
            matrix = torch.tanh(matrix @ matrix)  # bounded values, the cores busy
    return time.perf_counter() - started


def echo(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: with ``echo = true`` in the run config, answer at once (no data check, no training, no audit)."""
    if not bool(context.run_config.get(ECHO, False)):
        return call_next(msg, context)
    content = RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: 1})})
    if msg.metadata.message_type == MessageType.TRAIN:
        startup = production.process_age_s()  # process start -> handler, as a real reply's
        busy = keep_busy(float(context.run_config.get(ECHO_BUSY_S, 0.0)))
        content[ARRAYS] = echo_reply(msg, context)
        content[METRICS][T_STARTUP] = startup
        content[METRICS][TRAIN_SECONDS] = busy
    return Message(content, reply_to=msg)


def _fault(msg: Message, context: Context) -> str | None:
    """The fault this site's node config plans for this message, if any."""
    plan_text = str(context.node_config.get(NODE_CONFIG_KEY, ""))
    if not plan_text:
        return None
    config = msg.content[CONFIG]
    kind = str(msg.metadata.message_type)
    if kind == MessageType.TRAIN and config.get(PHASE) != PRETRAIN:
        return None
    return parse_fault_plan(plan_text).get((kind, int(config.get(SERVER_ROUND, 0))))


def _records(reply: Reply) -> RecordDict:
    """A spoiled reply as Flower records."""
    content = RecordDict()
    if reply.arrays is not None:
        content[ARRAYS] = ArrayRecord({k: Array(v) for k, v in reply.arrays.items()})
    if reply.metrics is not None:
        content[METRICS] = MetricRecord(reply.metrics)
    if reply.config is not None:
        content["site"] = ConfigRecord(reply.config)
    return content


def injected_fault(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: spoil this site's own reply when its node config asks for it (after the outgoing audit).

    The ``raise`` fault raises instead, before the handler runs: the production ``contained_errors`` (outside
    this mod) must turn it into a fixed error reply, keeping its text at the site.
    """
    fault = _fault(msg, context)
    if fault == "raise":
        raise leaking_exception()
    reply = call_next(msg, context)
    if fault is None or reply.has_error():
        return reply
    content = reply.content
    honest = Reply(
        {k: v.numpy() for k, v in content[ARRAYS].items()} if ARRAYS in content.array_records else None,
        dict(content[METRICS]) if METRICS in content.metric_records else None,
    )
    return Message(_records(spoil(honest, fault)), reply_to=msg)


# the first mod is the outermost: the production containment, then the test-only mods, then the audit
app = ClientApp(mods=[production.contained_errors, echo, injected_fault, production.outgoing_audit])
app.train()(production.train)
app.evaluate()(production.evaluate)
