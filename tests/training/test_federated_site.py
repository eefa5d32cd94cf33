"""A federated run between two sites without Flower: FederatedSite rounds + the pure weighted average."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from endofed.config import load_config, load_site_config
from endofed.federated.protocol import FINETUNE, NUM_EXAMPLES, PRETRAIN, SUBJECTS_FILE
from endofed.federated.weights import encoder_state
from endofed.io.checkpoint import load_checkpoint
from endofed.io.tensorboard import TENSORBOARD_DIR
from endofed.models import build_mae
from endofed.synth.example import write_example_site
from endofed.training.federated_site import FederatedSite, RoundPlan
from tests.helpers import OVERRIDES, TINY
from tests.reference_aggregate import weighted_average


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    paths = []
    for index, name in enumerate(("north", "south")):
        root = tmp_path_factory.mktemp(name)
        write_example_site(root, n_subjects=10, seed=10 + index, labelled_fraction=0.8, in_plane_mm=1.5, site_id=name)
        paths.append(root / "site.yaml")
    return paths


def _cfg():
    return load_config(TINY, OVERRIDES)


def test_round_plan_validation():
    with pytest.raises(ValueError, match="phase must be one of"):
        RoundPlan("warmup", 1, 1, 1)
    with pytest.raises(ValueError, match="bad round plan"):
        RoundPlan(PRETRAIN, 3, 2, 1)
    assert RoundPlan(PRETRAIN, 3, 4, 2).first_epoch == 4


def test_two_site_federation_pretrain_then_finetune(two_sites, tmp_path):
    cfg = _cfg()
    sites = [FederatedSite(load_site_config(p), cfg, "run1") for p in two_sites]
    model = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(0))
    global_state = {k: v.numpy() for k, v in encoder_state(model).items()}
    expected_keys = set(model.encoder.state_dict())
    for phase, rounds in ((PRETRAIN, 2), (FINETUNE, 1)):
        for server_round in range(1, rounds + 1):
            plan = RoundPlan(phase, server_round, rounds, local_epochs=1, proximal_mu=0.01)
            replies = [site.train(global_state, plan) for site in sites]
            for (state, metrics), site in zip(replies, sites, strict=True):
                assert set(state) == expected_keys  # encoder only: no decoder, no head
                assert all(np.isfinite(v.numpy()).all() for v in state.values())
                selected = site.cohort.select(("train", "val"), labelled_only=phase == FINETUNE)
                assert metrics[NUM_EXAMPLES] == len(selected)  # volumes, not batches
            global_state = weighted_average(
                [{k: v.numpy() for k, v in s.items()} for s, _ in replies],
                [m[NUM_EXAMPLES] for _, m in replies],
            )
    # The decoder and head stayed at the sites, on disk.
    mae = sites[0].stores["mae"]
    assert mae.rounds() == [1, 2]  # the last round and the one it continued from
    tensors, meta = load_checkpoint(mae.round_path(2), verify_hash=False)  # site-local: no hash
    assert any(k.startswith("local.decoder") for k in tensors) and not any(
        k.startswith("local.encoder") for k in tensors
    )
    assert meta["round"] == 2
    # Only the site's own entries keep AdamW moments (FederatedSite._save): step, exp_avg and exp_avg_sq of each
    # decoder parameter; the shared encoder's start fresh every round, so none of them is saved.
    own = [n for n, _ in model.named_parameters() if not n.startswith("encoder.")]
    assert sum(k.startswith("optim.") for k in tensors) == 3 * len(own)
    head, _ = load_checkpoint(sites[0].stores["classifier"].round_path(1))  # hashed: the verifying loader
    assert any(k.startswith("local.head") for k in head)
    assert sum(k.startswith("optim.") for k in head) == 3 * sum(k.startswith("local.") for k in head)
    # A restarted site (new process) finds its local state again and evaluates on its test patients.
    restarted = FederatedSite(load_site_config(two_sites[0]), cfg, "run1")
    saved = restarted.saved_state("mae")
    assert saved is not None and set(saved.weights) == {k.removeprefix("local.") for k in tensors if "local." in k}
    metrics = restarted.evaluate(global_state)
    assert metrics[NUM_EXAMPLES] == len(restarted.cohort.select(("test",), labelled_only=True))
    assert 0.0 <= metrics["auc"] <= 1.0 or np.isnan(metrics["auc"])
    local = restarted.evaluate(global_state, local_epochs=1)
    assert set(local) == set(metrics)
    # Every round recorded its training subjects locally; none of them is a held-out test patient.
    rounds = [json.loads(line) for line in (sites[0].state_dir / SUBJECTS_FILE).read_text().splitlines()]
    expected = [(PRETRAIN, 1), (PRETRAIN, 2), (FINETUNE, 1), (FINETUNE, 1)]  # the last: local fine-tuning
    assert [(r["phase"], r["round"]) for r in rounds] == expected
    test_ids = set(sites[0].cohort.test_ids)
    assert test_ids and all(r["subjects"] and not set(r["subjects"]) & test_ids for r in rounds)
    assert len(rounds[0]["subjects"]) > len(rounds[2]["subjects"])  # pre-training also uses unlabelled cases
    # Each committed round's epochs are TensorBoard scalars in the site's own folder, at their index in the schedule.
    board = EventAccumulator(str(sites[0].state_dir / TENSORBOARD_DIR))
    board.Reload()
    assert {"pretrain/loss", "pretrain/lr", "finetune/loss", "finetune/lr"} <= set(board.Tags()["scalars"])
    assert [e.step for e in board.Scalars("pretrain/loss")] == [0, 1]


def test_proximal_mu_pulls_towards_the_global_weights(two_sites):
    cfg = load_config(TINY, [*OVERRIDES, "logging.tensorboard=false"])  # and no TensorBoard folder is written
    model = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(0))
    start = {k: v.numpy() for k, v in encoder_state(model).items()}
    distance = {}
    for mu in (0.0, 100.0):
        site = FederatedSite(load_site_config(two_sites[1]), cfg, f"prox{int(mu)}")
        state, _ = site.train(start, RoundPlan(PRETRAIN, 1, 1, local_epochs=2, proximal_mu=mu))
        distance[mu] = sum(float(((state[k].numpy() - start[k]) ** 2).sum()) for k in start)
        assert not (site.state_dir / TENSORBOARD_DIR).exists()
    assert distance[100.0] < distance[0.0]


def test_bad_run_key(two_sites):
    with pytest.raises(ValueError, match="run key must be"):
        FederatedSite(load_site_config(two_sites[0]), _cfg(), "../escape")
