"""The hospital's ClientApp: Flower messages in, endofed library calls, Flower messages out.

Each message names a phase (MIM pre-training or fine-tuning), the round and the local epochs; the site
trains on its own data and returns only the encoder arrays and scalar metrics (``num-examples`` = number of
training volumes). Everything else stays in the site's work dir (see ``endofed.training.federated_site``).
"""

from __future__ import annotations

from pathlib import Path

import torch  # noqa: F401  (ArrayRecord's torch conversions need torch imported in this process)
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from endofed.config import load_site_config
from endofed.federated.audit import append_audit, audit_outgoing
from endofed.federated.bytes import from_transport, to_transport
from endofed.federated.runconfig import experiment_config, site_config_path
from endofed.federated.weights import encoder_state
from endofed.models import build_encoder
from endofed.training.federated_site import FederatedSite, RoundPlan

APP_DIR = Path(__file__).resolve().parents[1]
_SITES: dict[tuple[str, str], FederatedSite] = {}  # simulation reuses processes: keep the loaded cohort
_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def _shared_shapes(site: FederatedSite) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the shared encoder for this run's model config (computed once per process)."""
    key = str(site.state_dir)
    if key not in _SHAPES:
        encoder = build_encoder(site.cfg.model, site.cfg.data.roi_size)
        _SHAPES[key] = {k: tuple(v.shape) for k, v in encoder_state(encoder).items()}
    return _SHAPES[key]


def outgoing_audit(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: check every reply before it leaves the site, and log what left (``outgoing.jsonl``)."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    site = _site(context)
    content = reply.content
    arrays = {k: tuple(v.shape) for record in content.array_records.values() for k, v in record.items()}
    metrics = {k: v for record in content.metric_records.values() for k, v in record.items()}
    others = (
        len(content.config_records) + max(0, len(content.array_records) - 1) + max(0, len(content.metric_records) - 1)
    )
    record = audit_outgoing(arrays, metrics, others, _shared_shapes(site))
    append_audit(site.state_dir, {"message": msg.metadata.message_type, **record})
    return reply


app = ClientApp(mods=[outgoing_audit])


def _site(context: Context) -> FederatedSite:
    """This node's site session for this run (data checked once per process)."""
    path = site_config_path(context.node_config, context.run_config)
    key = (str(path), f"run-{context.run_id}")
    if key not in _SITES:
        cfg = experiment_config(context.run_config, APP_DIR)
        _SITES[key] = FederatedSite(load_site_config(path), cfg, key[1])
    return _SITES[key]


def _partition_metric(context: Context) -> dict[str, int]:
    """In simulation, the partition id identifies the site in the server's per-site report."""
    partition = context.node_config.get("partition-id")
    return {} if partition is None else {"partition-id": int(str(partition))}


def _received(msg: Message) -> tuple[dict[str, object], str]:
    """The encoder sent by the server as float32, and the wire format to reply in."""
    mode = str(msg.content["config"].get("transport", "fp32"))
    arrays = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    return dict(from_transport(arrays, mode)), mode


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local round on the received encoder."""
    config = msg.content["config"]
    plan = RoundPlan(
        phase=str(config["phase"]),
        server_round=int(config["server-round"]),
        total_rounds=int(config["total-rounds"]),
        local_epochs=int(config["local-epochs"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
    )
    shared, mode = _received(msg)
    state, metrics = _site(context).train(shared, plan)
    metrics |= _partition_metric(context)
    wire = {k: Array(v) for k, v in to_transport(state, mode).items()}
    content = RecordDict({"arrays": ArrayRecord(wire), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Test-split metrics of the received encoder with this site's head (optionally fine-tuned locally first)."""
    config = msg.content["config"]
    local_epochs = int(config.get("local-epochs", 0))
    shared, _ = _received(msg)
    metrics = _site(context).evaluate(shared, local_epochs)
    metrics |= _partition_metric(context)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
