"""A site's train reply carries the SHA-256 of its data passport (computed at the site), as 8 words of 32 bits."""

from __future__ import annotations

import json

from flwr.app import MessageType

from client.app import app as client_app
from endofed.config import load_site_config
from endofed.data.check import PASSPORT_FILE
from endofed.lineage.passport import passport_hash_of, passport_sha256
from tests.client.test_client_app import _context, _global_encoder, _message, sites  # noqa: F401 (fixture)


def test_the_train_reply_names_the_sites_passport_by_its_hash(sites):  # noqa: F811
    config = {"phase": "pretrain", "server-round": 1, "total-rounds": 1, "local-epochs": 1, "proximal-mu": 0.0}
    reply = client_app(_message(MessageType.TRAIN, _global_encoder(), config), _context(sites, 1))
    assert not reply.has_error(), reply.error
    metrics = dict(reply.content["metrics"])
    words = [metrics[f"passport-sha256-{i}"] for i in range(8)]
    assert all(isinstance(w, int) and 0 <= w < 2**32 for w in words)
    # The passport the site wrote (endofed data check) hashes to what was sent: anyone holding it can check.
    work_dir = load_site_config(sites[1]).work_dir
    passport = json.loads((work_dir / PASSPORT_FILE).read_text())
    assert passport_hash_of(metrics) == passport_sha256(passport)
