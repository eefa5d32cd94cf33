"""The hospital's ClientApp: Flower messages in, endofed library calls, Flower messages out.

Each message names a phase (MIM pre-training or fine-tuning), the round and the local epochs; the site
trains on its own data and returns only the encoder arrays and scalar metrics (``num-examples`` = number of
training volumes). Everything else stays in the site's work dir (see ``endofed.training.federated_site``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch  # ArrayRecord's torch conversions need torch imported in this process
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.exit import add_exit_handler

from endofed.config import load_site_config
from endofed.federated.audit import append_audit, audit_outgoing
from endofed.federated.bytes import from_transport, link_modes, payload_layout, to_transport
from endofed.federated.downlink import state_digest
from endofed.federated.packing import pack, unpack, wire_layout
from endofed.federated.protocol import (
    ARRAYS,
    BASE_DIGEST,
    CLASSIFIER_STATE,
    CONFIG,
    DEFAULT_TRANSPORT,
    DOWN_CODEC,
    LOCAL_EPOCHS,
    MAE_STATE,
    METRICS,
    PARTITION_ID,
    PHASE,
    PROXIMAL_MU,
    SERVER_ROUND,
    T_DECODE,
    T_ENCODE,
    T_LOCAL,
    T_SITE,
    T_STARTUP,
    TOTAL_ROUNDS,
    TRANSPORT,
    VIEW_DIGEST,
)
from endofed.federated.runconfig import NODE_SITE_CONFIG, RUN_KEY, experiment_config, site_config_path
from endofed.federated.schema import describe, finite_metrics
from endofed.federated.site_errors import (
    ERROR_LOG,
    SITE_INTERNAL,
    BaseUnknown,
    GlobalRefused,
    category,
    error_reason,
    write_error_log,
)
from endofed.io.crashlog import crash_log_dir
from endofed.lineage.passport import passport_metrics
from endofed.training.federated_site import FederatedSite, RoundPlan
from endofed.training.site_state import KnownGlobal

APP_DIR = Path(__file__).resolve().parents[1]
LOGGER = logging.getLogger(__name__)
_SITES: dict[tuple[str, str], FederatedSite] = {}  # simulation reuses processes: keep the loaded cohort


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere): ClientApp start-up before the handler."""
    try:
        start_ticks = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def outgoing_audit(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: check every reply against the schema before it leaves the site, and log what left (``outgoing.jsonl``).

    A train reply may hold exactly the encoder it received (packed in the reply's codec: dtypes, sizes) and the
    schema's metrics; an evaluate reply the schema's metrics only (:mod:`endofed.federated.schema`). Anything
    else raises :class:`endofed.federated.site_errors.WithheldReply`: the reply is not sent (error code 108).
    """
    reply = call_next(msg, context)
    if reply.has_error():
        return reply  # contained_errors (outside) replaces its text with a fixed sentence
    site = _site(context)
    allowed = wire_layout(site.expected, reply_mode(msg))  # the encoder it received, packed in the reply's codec
    record = audit_outgoing(str(msg.metadata.message_type), describe(reply.content), allowed)
    append_audit(site.state_dir, record)
    return reply


def _error_log_folder(context: Context) -> Path:
    """Where this site keeps the detail of a failure: its work dir's logs (the crash-log folder if unknown)."""
    try:
        return load_site_config(site_config_path(context.node_config, context.run_config)).work_dir / "logs"
    except Exception:  # the site YAML itself may be what failed
        return crash_log_dir()


def contained_errors(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod (outermost): a failure leaves the site as a category code and a fixed sentence, never its text.

    The exception's traceback goes to ``<work_dir>/logs/clientapp-errors.log`` at the site; the reply carries
    only ``endofed.federated.site_errors`` codes, and an error reply built further in is replaced the same way.
    """
    try:
        reply = call_next(msg, context)
    except Exception as exc:
        code = category(exc)
        try:
            write_error_log(_error_log_folder(context), exc, msg.metadata.message_type)
        except OSError:
            pass  # nowhere to write: the reply still says nothing more
        LOGGER.error("%s failed: %s (details in the site's logs/%s)", msg.metadata.message_type,
                     error_reason(code), ERROR_LOG)  # fmt: skip
        return Message(error=Error(code, error_reason(code)), reply_to=msg)
    if reply.has_error() and reply.error.reason != error_reason(reply.error.code):
        return Message(error=Error(SITE_INTERNAL, error_reason(SITE_INTERNAL)), reply_to=msg)
    return reply


app = ClientApp(mods=[contained_errors, outgoing_audit])


def _site(context: Context) -> FederatedSite:
    """This node's site session for this run (data checked once per process).

    In deployment (the node's own ``site-config``) the ClientApp process serves one message and ends through
    Flower's ``flwr_exit``, so a round's state is committed after the reply (``defer_commit``): the wait for it
    runs as an exit handler before Flower's force-exit timer (5 s in Flower 1.42) starts. Simulation reuses its
    processes and ends them without that handler: there a round is committed before its reply.
    """
    path = site_config_path(context.node_config, context.run_config)
    key = (str(path), str(context.run_config.get(RUN_KEY, "")) or f"run-{context.run_id}")
    if key not in _SITES:
        cfg = experiment_config(context.run_config, APP_DIR)
        deployed = NODE_SITE_CONFIG in context.node_config
        _SITES[key] = site = FederatedSite(load_site_config(path), cfg, key[1], defer_commit=deployed)
        if deployed:
            add_exit_handler(site.wait_for_commits, run_before_force_exit=True)
    return _SITES[key]


def _partition_metric(context: Context) -> dict[str, int]:
    """In simulation, the partition id identifies the site in the server's per-site report."""
    partition = context.node_config.get(PARTITION_ID)
    return {} if partition is None else {PARTITION_ID: int(str(partition))}


def _transport(msg: Message) -> str:
    """The federation's transport named by the server (``fp32`` when it names none)."""
    return str(msg.content[CONFIG].get(TRANSPORT, DEFAULT_TRANSPORT))


def reply_mode(msg: Message) -> str:
    """The codec of this site's reply (``delta_int8``: a delta against the received weights)."""
    return link_modes(_transport(msg))[1]


def _held_base(site: FederatedSite, digest: str) -> KnownGlobal:
    """The weights this site received in a kept round whose digest is ``digest`` (the base of a delta).

    Raises:
        BaseUnknown: the site holds no such weights (first contact, a wiped or other run's state).
    """
    for name in (CLASSIFIER_STATE, MAE_STATE):  # newest phase first
        found = site.stores[name].global_with_digest(digest)
        if found is not None:
            return found
    raise BaseUnknown(f"no kept round holds the base {digest[:12]}... of the received delta")


class Received(NamedTuple):
    """What a message brought: the encoder as float32, the reply's codec, its digest and the delta's base."""

    shared: dict[str, np.ndarray]
    reply_mode: str
    digest: str | None  # announced by the server (int8 down-link), checked
    base: KnownGlobal | None  # the kept global a delta was decoded on (proven by the digest)


def _received(msg: Message, site: FederatedSite) -> Received:
    """The encoder sent by the server, decoded and checked against its announced digest.

    With the int8 down-link the message names its own codec: a delta is added to the held weights its
    ``base-digest`` names, and the result must have the announced ``view-digest``
    (:mod:`endofed.federated.downlink`).

    Raises:
        GlobalRefused: the packed arrays do not fit this site's encoder in the message's codec.
        BaseUnknown: the base is not held here, or the decoded weights are not the ones announced.
    """
    config = msg.content[CONFIG]
    down, up = link_modes(_transport(msg))
    down = str(config.get(DOWN_CODEC, down))
    try:
        arrays = unpack({k: v.numpy() for k, v in msg.content[ARRAYS].items()}, payload_layout(site.expected, down))
    except ValueError as exc:
        raise GlobalRefused(f"the received arrays are not this site's encoder: {exc}") from exc
    base = _held_base(site, str(config[BASE_DIGEST])) if down == "delta_int8" else None
    decoded = from_transport(arrays, down, None if base is None else base.arrays)
    announced = None if config.get(VIEW_DIGEST) is None else str(config[VIEW_DIGEST])
    if announced is not None and state_digest(decoded) != announced:
        raise BaseUnknown("the decoded weights do not have the digest the coordinator announced")
    return Received(decoded, up, announced, base)


def _reply_arrays(state: Mapping[str, torch.Tensor], mode: str, received: Mapping[str, np.ndarray]) -> ArrayRecord:
    """The trained encoder in the reply's codec, packed (a delta is taken against exactly the weights received)."""
    return ArrayRecord({k: Array(v) for k, v in pack(to_transport(state, mode, received)).items()})


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local round on the received encoder; metrics include where the time went (``t-*`` seconds)."""
    started, startup = time.perf_counter(), process_age_s()
    config = msg.content[CONFIG]
    plan = RoundPlan(
        phase=str(config[PHASE]),
        server_round=int(config[SERVER_ROUND]),
        total_rounds=int(config[TOTAL_ROUNDS]),
        local_epochs=int(config[LOCAL_EPOCHS]),
        proximal_mu=float(config.get(PROXIMAL_MU, 0.0)),
    )
    site = _site(context)
    loaded = time.perf_counter()
    received = _received(msg, site)
    plan = dataclasses.replace(plan, received_digest=received.digest)
    decoded = time.perf_counter()
    state, metrics = site.train(received.shared, plan, received.base)
    trained = time.perf_counter()
    wire = _reply_arrays(state, received.reply_mode, received.shared)
    metrics |= _partition_metric(context)
    metrics |= passport_metrics(site.cohort.passport)  # the SHA-256 of the site's data passport, for the model card
    metrics |= {
        T_STARTUP: startup,  # process start -> handler (imports, Flower's ClientApp set-up)
        T_SITE: loaded - started,  # site config, data check against the cache, splits
        T_DECODE: decoded - loaded,
        T_LOCAL: trained - decoded,  # model build, local state load/save, and the training itself
        T_ENCODE: time.perf_counter() - trained,
    }
    content = RecordDict({ARRAYS: wire, METRICS: MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Test-split metrics of the received encoder with this site's head (optionally fine-tuned locally first).

    A metric that is undefined on this site's test set (e.g. the AUC of a one-class set: NaN) is left out of the
    reply, which carries finite numbers only; the coordinator records it as missing.
    """
    config = msg.content[CONFIG]
    local_epochs = int(config.get(LOCAL_EPOCHS, 0))
    site = _site(context)
    received = _received(msg, site)
    metrics, undefined = finite_metrics(site.evaluate(received.shared, local_epochs, received.base))
    if undefined:
        LOGGER.warning("test metrics %s are undefined on this site's test set: left out of the reply", undefined)
    metrics |= _partition_metric(context)
    return Message(content=RecordDict({METRICS: MetricRecord(metrics)}), reply_to=msg)
