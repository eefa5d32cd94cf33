"""The int8 down-link at a real ClientApp: round 2 decodes a delta against the weights kept from round 1."""

from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import MessageType

from client.app import app as client_app
from endofed.config import load_site_config
from endofed.federated.downlink import DownLink
from endofed.federated.site_errors import SITE_BASE_UNKNOWN
from tests.client.test_client_app import _context, _global_encoder, _message, sites  # noqa: F401 (fixture)

ROUND = {"phase": "pretrain", "total-rounds": 3, "local-epochs": 1, "transport": "delta_int8"}


def _send(link: DownLink, master: dict[str, np.ndarray], node: int, context, server_round: int):
    """One training message of the server's down-link for ``node``, through the shipped ClientApp."""
    outgoing = link.advance(master).for_node(node)
    config = {**ROUND, "server-round": server_round, "down-codec": outgoing.mode, "view-digest": outgoing.view_digest}
    if outgoing.base_digest is not None:
        config["base-digest"] = outgoing.base_digest
    wire = {k: torch.from_numpy(np.array(v)) for k, v in outgoing.payload.items()}
    return outgoing, client_app(_message(MessageType.TRAIN, wire, config), context)


def _kept_global(site_yaml, run_key: str, server_round: int) -> dict:
    folder = load_site_config(site_yaml).work_dir / "federation" / run_key / "mae" / f"round-{server_round:04d}"
    return json.loads((folder / "global.json").read_text())


def test_a_site_decodes_round_2s_int8_delta_on_the_view_it_kept_from_round_1(sites):  # noqa: F811
    master = {k: v.numpy() for k, v in _global_encoder().items()}
    link, context = DownLink(), _context(sites, 0)
    context.run_config["run-key"] = "downlink-ok"
    first, reply = _send(link, master, 7, context, 1)
    assert first.mode == "bf16" and not reply.has_error(), reply.error
    assert _kept_global(sites[0], "downlink-ok", 1)["digest"] == first.view_digest  # the site kept the view
    link.confirm(7)
    moved = {k: v + np.float32(0.01) * np.sign(v) for k, v in master.items()}  # the next round's master weights
    second, reply = _send(link, moved, 7, context, 2)
    assert second.mode == "delta_int8" and second.base_digest == first.view_digest
    assert not reply.has_error(), reply.error
    assert _kept_global(sites[0], "downlink-ok", 2)["digest"] == second.view_digest  # decoded exactly the view
    fp32 = sum(v.nbytes for v in master.values())
    assert sum(v.nbytes for v in second.payload.values()) == fp32 // 4 + 4 * len(master)  # int8 + one scale each


def test_a_delta_on_a_base_the_site_does_not_hold_is_refused_with_its_own_code(sites):  # noqa: F811
    master = {k: v.numpy() for k, v in _global_encoder().items()}
    link, context = DownLink(), _context(sites, 1)
    context.run_config["run-key"] = "downlink-unknown"
    link.advance(master)  # round 1 went to other sites: this one never received it
    link.confirm(7)  # the server wrongly believes it holds the view
    outgoing, reply = _send(link, {k: v * np.float32(1.01) for k, v in master.items()}, 7, context, 2)
    assert outgoing.mode == "delta_int8"
    assert reply.has_error() and reply.error.code == SITE_BASE_UNKNOWN
    state = load_site_config(sites[1]).work_dir / "federation" / "downlink-unknown" / "mae"
    assert not state.exists() or not any(state.iterdir())  # nothing was trained or written


def test_weights_that_do_not_decode_to_the_announced_view_are_refused(sites):  # noqa: F811
    master = {k: v.numpy() for k, v in _global_encoder().items()}
    link, context = DownLink(), _context(sites, 1)
    context.run_config["run-key"] = "downlink-digest"
    outgoing = link.advance(master).for_node(7)
    config = {**ROUND, "server-round": 1, "down-codec": outgoing.mode, "view-digest": "0" * 64}
    wire = {k: torch.from_numpy(np.array(v)) for k, v in outgoing.payload.items()}
    reply = client_app(_message(MessageType.TRAIN, wire, config), context)
    assert reply.has_error() and reply.error.code == SITE_BASE_UNKNOWN
