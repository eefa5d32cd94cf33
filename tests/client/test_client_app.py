"""The ClientApp called directly with built Messages (no Ray, no SuperLink): what leaves a site."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.app import app as client_app
from endofed.cli.common import LOG_DIR_ENV
from endofed.config import load_config, load_site_config
from endofed.federated.audit import WithheldReply
from endofed.federated.bytes import payload_layout
from endofed.federated.downlink import state_digest
from endofed.federated.packing import pack, unpack, wire_layout
from endofed.federated.schema import EVALUATE_METRICS
from endofed.federated.site_errors import ERROR_LOG, SITE_CONFIG, SITE_DATA, error_reason
from endofed.federated.weights import encoder_state
from endofed.models import build_mae
from endofed.synth.example import write_example_site
from tests.helpers import OVERRIDES, ROOT, TINY

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


def _message(kind: str, payload: Mapping[str, torch.Tensor | np.ndarray], config: dict) -> Message:
    """A message from the server carrying ``payload`` (weights in some codec) packed, as the server sends it."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, NODE_ID, 1
    arrays = ArrayRecord({k: Array(v) for k, v in pack({k: np.asarray(v) for k, v in payload.items()}).items()})
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
    return Message(content=content, message_type=kind, dst_node_id=NODE_ID)


def _global_encoder() -> dict[str, torch.Tensor]:
    cfg = load_config(TINY, OVERRIDES)
    return encoder_state(build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(1)))


def _shapes() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _global_encoder().items()}


def _payload(reply: Message, mode: str) -> dict[str, np.ndarray]:
    """A train reply's payload in codec ``mode``, unpacked (it must fit the encoder's layout exactly)."""
    return unpack({k: v.numpy() for k, v in reply.content["arrays"].items()}, payload_layout(_shapes(), mode))


def test_train_reply_holds_only_the_encoder_and_scalar_metrics(sites):
    sent = _global_encoder()
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 2, "local-epochs": 1, "proximal-mu": 0.0}
    reply = client_app(_message(MessageType.TRAIN, sent, config), _context(sites, 0))
    assert not reply.has_error(), reply.error
    content = reply.content
    assert set(content.array_records) == {"arrays"} and set(content.metric_records) == {"metrics"}
    assert not content.config_records  # no strings at all: no paths, no subject ids
    values = sum(v.numel() for v in sent.values())
    assert {k: (str(v.dtype), tuple(v.shape)) for k, v in content["arrays"].items()} == {
        "packed/float32": ("float32", (values,))
    }  # one array: every encoder value, nothing else
    arrays = _payload(reply, "fp32")
    for key, value in arrays.items():
        assert value.shape == tuple(sent[key].shape)
        assert not np.array_equal(value, sent[key].numpy()) or key.endswith("bias")
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
    metrics = dict(evaluation.content["metrics"])
    assert all(math.isfinite(v) for v in metrics.values())  # finite numbers only leave the site
    assert metrics["num-examples"] == 1 and {"specificity", "f1", "ece"} <= set(metrics) <= EVALUATE_METRICS
    # one test patient (a negative): AUC, sensitivity and balanced accuracy are undefined, so they are left out
    assert not {"auc", "sensitivity", "balanced_accuracy"} & set(metrics)
    assert not evaluation.content.array_records  # evaluation sends nothing but numbers back


def test_missing_site_config_names_the_fix_in_the_site_log_only(sites, tmp_path, monkeypatch):
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path / "logs"))  # no site YAML: no work dir to log into
    context = Context(run_id=RUN_ID, node_id=NODE_ID, node_config={}, state=RecordDict(), run_config={})
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1}
    reply = client_app(_message(MessageType.TRAIN, _global_encoder(), config), context)
    assert reply.has_error() and reply.error.code == SITE_CONFIG and reply.error.reason == error_reason(SITE_CONFIG)
    assert "--node-config 'site-config=" in (tmp_path / "logs" / ERROR_LOG).read_text()


def test_an_exception_naming_a_path_and_a_subject_leaves_the_site_as_a_fixed_sentence(sites, tmp_path):
    site_yaml = tmp_path / "site" / "site.yaml"
    write_example_site(site_yaml.parent, n_subjects=4, seed=3, labelled_fraction=1.0, in_plane_mm=1.5, site_id="x")
    manifest = site_yaml.parent / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*lines, lines[1]]) + "\n")  # subject 1 twice: a DataError naming it and the path
    subject = lines[1].split(",")[0]
    context = _context([site_yaml], 0)
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1}
    reply = client_app(_message(MessageType.TRAIN, _global_encoder(), config), context)
    assert reply.has_error() and reply.error.code == SITE_DATA
    assert reply.error.reason == error_reason(SITE_DATA)
    assert subject not in str(reply.error.reason) and str(tmp_path) not in str(reply.error.reason)
    detail = (site_yaml.parent / "work" / "logs" / ERROR_LOG).read_text()
    assert f"duplicate subject_id {subject!r}" in detail and str(manifest) in detail and "Traceback" in detail


def test_bf16_transport_round_trip_through_the_client(sites):
    from endofed.federated.bytes import from_transport, to_transport

    sent = _global_encoder()
    wire = {k: torch.from_numpy(v) for k, v in to_transport(sent, "bf16").items()}
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "transport": "bf16"}
    reply = client_app(_message(MessageType.TRAIN, wire, config), _context(sites, 0))
    assert not reply.has_error(), reply.error
    arrays = _payload(reply, "bf16")
    assert all(v.dtype == np.uint16 and v.shape == tuple(sent[k].shape) for k, v in arrays.items())
    decoded = from_transport(arrays, "bf16")
    assert set(decoded) == set(sent) and all(v.dtype == np.float32 for v in decoded.values())


def _bf16_wire(sent: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """The bf16 down-link of ``sent`` and the float32 weights a site decodes from it."""
    from endofed.federated.bytes import from_transport, to_transport

    bits = to_transport(sent, "bf16")
    return {k: torch.from_numpy(v) for k, v in bits.items()}, from_transport(bits, "bf16")


def test_delta_int8_reply_is_a_quarter_of_fp32_and_passes_the_audit(sites):
    from endofed.federated.bytes import SCALE_SUFFIX, from_transport, state_nbytes
    from endofed.federated.protocol import OUTGOING_FILE

    sent = _global_encoder()
    wire, received = _bf16_wire(sent)
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "transport": "delta_int8",
              "down-codec": "bf16", "view-digest": state_digest(received)}  # fmt: skip
    context = _context(sites, 0)
    context.run_config["run-key"] = "delta"
    reply = client_app(_message(MessageType.TRAIN, wire, config), context)
    assert not reply.has_error(), reply.error
    assert list(reply.content["arrays"]) == ["packed/float32", "packed/int8"]
    arrays = _payload(reply, "delta_int8")
    assert set(arrays) == set(sent) | {k + SCALE_SUFFIX for k in sent}
    assert all(arrays[k].dtype == np.int8 and arrays[k].shape == tuple(sent[k].shape) for k in sent)
    assert state_nbytes(arrays) == state_nbytes(sent) // 4 + 4 * len(sent)
    trained = from_transport(arrays, "delta_int8", received)  # the delta is against the bf16 weights received
    assert any(not np.array_equal(trained[k], received[k]) for k in sent)
    log = load_site_config(sites[0]).work_dir / "federation" / "delta" / OUTGOING_FILE
    audit = [json.loads(line) for line in log.read_text().splitlines()]
    assert audit[-1]["arrays"] == 2  # the encoder's int8 values and its scales, packed; nothing else


@pytest.mark.parametrize("transport", ["fp32", "bf16", "delta_int8"])
def test_echo_moves_as_many_bytes_as_a_real_reply(sites, transport):
    from endofed.federated.bytes import from_transport, link_modes, state_nbytes, to_transport
    from tests.instrumented_client import ECHO, ECHO_STEP
    from tests.instrumented_client import app as instrumented_app

    sent = _global_encoder()
    down, up = link_modes(transport)
    down = "bf16" if down == "delta_int8" else down  # the int8 down-link's first round: full bf16 weights
    wire = {k: torch.from_numpy(v) for k, v in to_transport(sent, down).items()}
    received = from_transport(to_transport(sent, down), down)
    context = _context(sites, 0)
    context.run_config[ECHO] = True
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "transport": transport,
              "down-codec": down}  # fmt: skip
    reply = instrumented_app(_message(MessageType.TRAIN, wire, config), context)
    packed = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    layout = {k: (str(v.dtype), v.shape) for k, v in packed.items()}
    assert layout == wire_layout(_shapes(), up)  # a real reply's arrays: the same objects for Flower to move
    assert state_nbytes(packed) == state_nbytes(to_transport(received, up, received))  # and a real reply's size
    arrays = _payload(reply, up)
    # new content (Flower would not push arrays it already holds; constant arrays such as zero biases aside)
    varied = [k for k in sent if len(np.unique(wire[k].numpy())) > 1]
    assert varied and not any(np.array_equal(arrays[k], wire[k].numpy()) for k in varied)
    if up == "delta_int8":  # ... and a small move of the weights sent, as a real update is
        back = from_transport(arrays, up, received)
        assert all(np.abs(back[k] - received[k]).max() <= 128 * ECHO_STEP * 1.1 for k in sent)
        assert all(not np.array_equal(back[k], received[k]) for k in varied)


def test_the_shipped_client_app_has_neither_echo_nor_fault_injection(sites):
    from flwr.app import MetricRecord

    from tests.instrumented_client import ECHO

    sent = _global_encoder()
    context = _context(sites, 0)
    context.run_config[ECHO] = True  # ignored by the shipped app: it trains as usual
    context.node_config["inject-fault"] = "nan@1"  # likewise ignored
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1}
    reply = client_app(_message(MessageType.TRAIN, sent, config), context)
    metrics = dict(next(iter(reply.content.metric_records.values())).items())
    assert isinstance(reply.content["metrics"], MetricRecord) and metrics["num-examples"] > 1  # trained volumes
    assert all(np.isfinite(v.numpy()).all() for v in reply.content["arrays"].values())
    source = (ROOT / "client" / "app.py").read_text()
    assert "echo" not in source.lower() and "inject" not in source.lower() and "corrupt" not in source


def test_the_instrumented_app_is_a_separate_bundle(tmp_path):
    from tests.instrumented import build_instrumented_app

    app_dir = build_instrumented_app(tmp_path / "app")
    pyproject = (app_dir / "pyproject.toml").read_text()
    assert 'clientapp = "instrumented_client:app"' in pyproject and "echo = false" in pyproject
    assert '"/instrumented_client.py"' in pyproject
    shipped = (ROOT / "pyproject.toml").read_text()
    assert 'clientapp = "client.app:app"' in shipped and "instrumented" not in shipped and "echo" not in shipped


def _leaking_app(extra: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], contained: bool = False):
    """A ClientApp with the real outgoing audit (inside the real containment if ``contained``, as shipped) whose
    handler adds ``extra(honest)`` arrays to (or over) the packed arrays of an honest reply."""
    from flwr.app import MetricRecord
    from flwr.clientapp import ClientApp

    from client.app import contained_errors, outgoing_audit
    from endofed.federated.bytes import link_modes, to_transport

    leaky = ClientApp(mods=[contained_errors, outgoing_audit] if contained else [outgoing_audit])

    @leaky.train()
    def train(msg: Message, context: Context) -> Message:
        received = unpack({k: v.numpy() for k, v in msg.content["arrays"].items()}, payload_layout(_shapes(), "fp32"))
        mode = link_modes(str(msg.content["config"]["transport"]))[1]
        honest = pack(to_transport(received, mode, received))
        arrays = ArrayRecord({k: Array(v) for k, v in {**honest, **extra(honest)}.items()})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    return leaky


@pytest.mark.parametrize(
    ("transport", "extra", "refused"),
    [
        ("delta_int8", lambda p: {}, None),  # the encoder's int8 values and one scale per entry: allowed
        ("delta_int8", lambda p: {"decoder_pred.weight": np.zeros((2, 2), np.int8)}, "beyond the shared encoder"),
        ("delta_int8", lambda p: {"packed/float32": np.zeros(5, np.float32)}, r"'packed/float32' has shape \(5,\)"),
        (
            "delta_int8",
            lambda p: {"packed/float32": np.float64(p["packed/float32"])},
            "dtype float64, expected float32",
        ),
        ("delta_int8", lambda p: {"packed/int8": p["packed/int8"].view(np.uint8)}, "has dtype uint8, expected int8"),
        ("fp32", lambda p: {"packed/int8": np.zeros(1, np.int8)}, "beyond the shared encoder"),
    ],
)
def test_outgoing_audit_allows_exactly_the_reply_codec_layout(sites, transport, extra, refused):
    sent = _global_encoder()
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "transport": transport}
    leaky = _leaking_app(extra)
    if refused is None:
        reply = leaky(_message(MessageType.TRAIN, sent, config), _context(sites, 1))
        assert not reply.has_error(), reply.error
    else:
        with pytest.raises(WithheldReply, match=refused):
            leaky(_message(MessageType.TRAIN, sent, config), _context(sites, 1))


def test_the_raise_fault_leaves_the_site_as_a_fixed_sentence_and_its_text_stays_in_the_site_log(sites):
    from endofed.federated.faults import LEAKED_PATH, LEAKED_SUBJECT
    from tests.instrumented_client import app as instrumented

    context = _context(sites, 0)
    context.node_config["inject-fault"] = "raise@1"
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1}
    reply = instrumented(_message(MessageType.TRAIN, _global_encoder(), config), context)
    assert reply.has_error() and (reply.error.code, reply.error.reason) == (SITE_DATA, error_reason(SITE_DATA))
    site_log = load_site_config(sites[0]).work_dir / "logs" / ERROR_LOG
    assert LEAKED_SUBJECT in site_log.read_text() and LEAKED_PATH in site_log.read_text()


def test_a_reply_the_audit_withholds_leaves_as_code_108_only(sites):
    from endofed.federated.site_errors import SITE_WITHHELD

    leaky = _leaking_app(lambda p: {"decoder_pred.weight": np.zeros((2, 2), np.int8)}, contained=True)
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "transport": "fp32"}
    reply = leaky(_message(MessageType.TRAIN, _global_encoder(), config), _context(sites, 1))
    assert reply.has_error() and (reply.error.code, reply.error.reason) == (SITE_WITHHELD, error_reason(SITE_WITHHELD))


def test_packed_arrays_that_do_not_fit_the_sites_encoder_are_refused_before_anything_runs(sites):
    from endofed.federated.site_errors import SITE_REFUSED_GLOBAL

    sent = _global_encoder()
    short = dict(sent)
    short.pop(next(iter(short)))  # another model's encoder: one entry fewer, so fewer packed values
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1}
    context = _context(sites, 0)
    context.run_config["run-key"] = "not-ours"
    reply = client_app(_message(MessageType.TRAIN, short, config), context)
    assert reply.has_error() and reply.error.code == SITE_REFUSED_GLOBAL
    detail = (load_site_config(sites[0]).work_dir / "logs" / ERROR_LOG).read_text()
    assert "the received arrays are not this site's encoder: packed 'packed/float32' is float32" in detail
    assert not (load_site_config(sites[0]).work_dir / "federation" / "not-ours" / "mae").exists()


def test_the_busy_echo_keeps_the_cpu_busy_and_reports_it_as_training(sites):
    import time

    from tests.instrumented_client import ECHO, ECHO_BUSY_S
    from tests.instrumented_client import app as instrumented_app

    context = _context(sites, 0)
    context.run_config[ECHO], context.run_config[ECHO_BUSY_S] = True, 0.4
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "transport": "fp32"}
    started_cpu = time.process_time()
    reply = instrumented_app(_message(MessageType.TRAIN, _global_encoder(), config), context)
    assert not reply.has_error(), reply.error
    assert 0.4 <= reply.content["metrics"]["train-seconds"] < 5.0
    assert time.process_time() - started_cpu >= 0.3  # computing, not sleeping
