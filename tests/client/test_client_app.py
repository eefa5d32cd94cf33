"""The ClientApp called directly with built Messages (no Ray, no SuperLink): what leaves a site."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.app import app as client_app
from endofed.config import load_config
from endofed.data.example import write_example_site
from endofed.errors import ConfigError
from endofed.federated.weights import encoder_state
from endofed.models import build_mae
from tests.training.conftest import OVERRIDES, TINY

NODE_ID, RUN_ID = 7, 11


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    paths = []
    for index in range(2):
        root = tmp_path_factory.mktemp(f"site{index}")
        write_example_site(root, n_subjects=10, seed=20 + index, labelled_fraction=0.8, in_plane_mm=1.5,
                           site_id=f"s{index}")  # fmt: skip
        paths.append(root / "site.yaml")
    return paths


def _context(sites: list[Path], partition: int) -> Context:
    run_config = {
        "config-path": TINY,
        "config-overrides": ";".join(OVERRIDES),
        "site-configs": os.pathsep.join(str(p) for p in sites),
        "output-dir": "",
    }
    node_config = {"partition-id": partition, "num-partitions": len(sites)}
    return Context(run_id=RUN_ID, node_id=NODE_ID, node_config=node_config, state=RecordDict(), run_config=run_config)


def _message(kind: str, arrays: dict[str, torch.Tensor], config: dict) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, NODE_ID, 1
    content = RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(config)})
    return Message(content=content, message_type=kind, dst_node_id=NODE_ID)


def _global_encoder() -> dict[str, torch.Tensor]:
    cfg = load_config(TINY, OVERRIDES)
    return encoder_state(build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(1)))


def test_train_reply_holds_only_the_encoder_and_scalar_metrics(sites):
    sent = _global_encoder()
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 2, "local-epochs": 1, "proximal-mu": 0.0}
    reply = client_app(_message(MessageType.TRAIN, sent, config), _context(sites, 0))
    assert not reply.has_error(), reply.error
    content = reply.content
    assert set(content.array_records) == {"arrays"} and set(content.metric_records) == {"metrics"}
    assert not content.config_records  # no strings at all: no paths, no subject ids
    arrays = content["arrays"]
    assert set(arrays) == set(sent)  # exactly the encoder's keys
    largest = max(v.numel() for v in sent.values())
    for key, value in arrays.items():
        assert value.numpy().shape == tuple(sent[key].shape) and value.numpy().size <= largest
        assert not np.array_equal(value.numpy(), sent[key].numpy()) or key.endswith("bias")
    metrics = content["metrics"]
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["num-examples"] == 8  # volumes of the non-test cases, not batches
    assert metrics["partition-id"] == 0


def test_finetune_and_evaluate_replies(sites):
    sent = _global_encoder()
    config = {"phase": "finetune", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "proximal-mu": 0.1}
    reply = client_app(_message(MessageType.TRAIN, sent, config), _context(sites, 1))
    assert not reply.has_error(), reply.error
    evaluation = client_app(_message(MessageType.EVALUATE, sent, {"local-epochs": 0}), _context(sites, 1))
    assert not evaluation.has_error(), evaluation.error
    metrics = evaluation.content["metrics"]
    assert {"auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "ece", "num-examples"} <= set(metrics)
    assert not evaluation.content.array_records  # evaluation sends nothing but numbers back


def test_missing_site_config_names_the_fix(sites):
    context = Context(run_id=RUN_ID, node_id=NODE_ID, node_config={}, state=RecordDict(), run_config={})
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1}
    with pytest.raises(ConfigError, match="--node-config 'site-config="):  # Flower turns it into an error reply
        client_app(_message(MessageType.TRAIN, _global_encoder(), config), context)


def test_bf16_transport_round_trip_through_the_client(sites):
    from endofed.federated.bytes import from_transport, to_transport

    sent = _global_encoder()
    wire = {k: torch.from_numpy(v) for k, v in to_transport(sent, "bf16").items()}
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "transport": "bf16"}
    reply = client_app(_message(MessageType.TRAIN, wire, config), _context(sites, 0))
    assert not reply.has_error(), reply.error
    arrays = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    assert all(v.dtype == np.uint16 and v.shape == tuple(sent[k].shape) for k, v in arrays.items())
    decoded = from_transport(arrays, "bf16")
    assert set(decoded) == set(sent) and all(v.dtype == np.float32 for v in decoded.values())
