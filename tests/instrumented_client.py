"""An instrumented ClientApp for tests and benchmarks only: the production one plus an echo baseline and faults.

The shipped bundle runs ``client.app:app`` (the outgoing audit, then endofed's train/evaluate). This app
registers the same handlers behind two more mods, and it is never part of the bundle a hospital receives:
:func:`tests.instrumented.build_instrumented_app` lays out a separate Flower app folder for it.

* ``echo`` (run-config key ``echo = true``): reply with as many bytes as a real reply and do no training, to
  measure Flower's own cost per round (``benchmarks/federation_overhead.py``).
* ``inject-fault`` (SuperNode ``--node-config 'inject-fault="nan@2,norm@3"'``): spoil this site's own training
  reply in the named pre-training rounds, after its outgoing audit, as a hostile site would
  (``tests/test_resilience.py``; see :mod:`endofed.federated.faults`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from client import app as production
from endofed.federated.bytes import zero_delta
from endofed.federated.faults import NODE_CONFIG_KEY, corrupt, parse_fault_plan
from endofed.federated.protocol import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, PHASE, PRETRAIN, SERVER_ROUND

ECHO = "echo"  # run-config key of the echo baseline


def echo_reply(msg: Message) -> ArrayRecord:
    """The echo baseline's arrays: as many bytes as a real reply, in the reply's codec, and no training.

    Flower stores arrays by content hash and does not push an object the SuperLink already holds, so sending
    the received arrays back unchanged would move almost nothing up. Each array is rolled by one element
    instead (same bytes, new content). A delta reply carries the low byte of every received value with scale 0:
    as many bytes as a real delta, decoding to exactly the weights sent.
    """
    received = {k: v.numpy() for k, v in msg.content[ARRAYS].items()}
    if production.reply_mode(msg) != "delta_int8":
        return ArrayRecord({k: Array(np.roll(v, 1)) for k, v in received.items()})
    payload = zero_delta({k: v.shape for k, v in received.items()})
    payload |= {k: v.astype(np.int8) for k, v in received.items()}  # wraps to the low byte; scale 0 ignores it
    return ArrayRecord({k: Array(v) for k, v in payload.items()})


def echo(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: with ``echo = true`` in the run config, answer at once (no data check, no training, no audit)."""
    if not bool(context.run_config.get(ECHO, False)):
        return call_next(msg, context)
    content = RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: 1})})
    if msg.metadata.message_type == MessageType.TRAIN:
        content[ARRAYS] = echo_reply(msg)
    return Message(content, reply_to=msg)


def injected_fault(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: spoil this site's own training reply when its node config asks for it (after the outgoing audit)."""
    reply = call_next(msg, context)
    plan_text = str(context.node_config.get(NODE_CONFIG_KEY, ""))
    if not plan_text or reply.has_error() or msg.metadata.message_type != MessageType.TRAIN:
        return reply
    config = msg.content[CONFIG]
    fault = parse_fault_plan(plan_text).get(int(config[SERVER_ROUND])) if config.get(PHASE) == PRETRAIN else None
    if fault is None:
        return reply
    metrics = reply.content[METRICS]
    honest = {k: v.numpy() for k, v in reply.content[ARRAYS].items()}
    arrays, claimed = corrupt(honest, int(metrics[NUM_EXAMPLES]), fault)
    reply.content[ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    metrics[NUM_EXAMPLES] = claimed
    return reply


app = ClientApp(mods=[echo, injected_fault, production.outgoing_audit])  # the first mod is the outermost
app.train()(production.train)
app.evaluate()(production.evaluate)
