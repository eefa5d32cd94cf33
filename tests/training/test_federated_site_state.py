"""A site's local state between rounds: what is saved, and the model rebuilt from it without random init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endofed.config import load_config, load_site_config
from endofed.federated.protocol import PRETRAIN
from endofed.federated.weights import encoder_state, load_shared
from endofed.models import build_mae
from endofed.seeds import derive_seed
from endofed.training.federated_site import FederatedSite, RoundPlan
from endofed.training.local_state import full_state, local_state
from tests.helpers import OVERRIDES, TINY


def test_full_state_by_hand():
    shared = {"norm.weight": np.array([1.0, 2.0], dtype=np.float32)}
    local = {"decoder_pred.bias": torch.tensor([3.0])}
    state = full_state(shared, local)
    assert set(state) == {"encoder.norm.weight", "decoder_pred.bias"}
    assert state["encoder.norm.weight"].tolist() == [1.0, 2.0]
    assert state["decoder_pred.bias"] is local["decoder_pred.bias"]  # the site's own tensors are handed over
    state["encoder.norm.weight"].add_(1.0)  # the model trains its tensors in place ...
    assert shared["norm.weight"].tolist() == [1.0, 2.0]  # ... and the received arrays stay as sent
    with pytest.raises(ValueError, match=r"also holds shared entries \['encoder.norm.weight'\]"):
        full_state(shared, {"encoder.norm.weight": torch.zeros(2)})


def test_local_state_splits_weights_and_optimiser_state():
    tensors = {"local.head.bias": torch.zeros(2), "optim.state.0.step": torch.tensor(3.0)}
    saved = local_state(tensors, {"optimizer": {"param_groups": []}, "round": 2})
    assert list(saved.weights) == ["head.bias"] and list(saved.optimizer) == ["state.0.step"]
    assert saved.optimizer_meta == {"param_groups": []}
    with pytest.raises(ValueError, match=r"not a site-local state file: keys \['encoder.w'\]"):
        local_state(tensors | {"encoder.w": torch.zeros(1)}, {"optimizer": {}})
    with pytest.raises(ValueError, match="optimizer metadata None"):
        local_state(tensors, {"round": 2})


def test_a_later_round_rebuilds_exactly_the_seeded_model_plus_its_saved_decoder(training_site):
    cfg = load_config(TINY, OVERRIDES)
    site = FederatedSite(load_site_config(training_site), cfg, "state")
    start = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(5))
    global_state = {k: v.numpy() for k, v in encoder_state(start).items()}
    trained, _ = site.train(global_state, RoundPlan(PRETRAIN, 1, 2, local_epochs=1))
    received = {k: v.numpy().copy() for k, v in trained.items()}
    saved = site._restore("mae", 2)
    assert saved is not None
    # What the code did before: a seeded build (random encoder and decoder), the shared encoder and the saved
    # decoder loaded on top. The new build draws no random number and must hold exactly the same weights.
    seed = derive_seed(cfg.seed, site.site.site_id, "mae")
    before = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(seed))
    load_shared(before, received)
    before.load_state_dict(saved.weights, strict=False)
    after = build_mae(cfg.model, cfg.data.roi_size, state=full_state(received, saved.weights))
    assert [n for n, _ in after.named_parameters()] == [n for n, _ in before.named_parameters()]  # optimiser order
    assert all(torch.equal(v, before.state_dict()[k]) for k, v in after.state_dict().items())
    # Round 2 trains from the received arrays without changing them (the caller may send them to other sites).
    site.train(received, RoundPlan(PRETRAIN, 2, 2, local_epochs=1))
    assert all(np.array_equal(received[k], trained[k].numpy()) for k in received)


@pytest.mark.parametrize("defer", [False, True], ids=["committed-before-reply", "committed-after-reply"])
def test_a_repeated_round_redoes_exactly_the_same_work_and_a_late_round_continues_from_the_latest(training_site, defer):
    """A coordinator resumed after a crash repeats round k: the site redoes it from its round k-1 state.

    Committed after the reply (deployment), each round's files are written while the next call has already
    begun: that call waits for them (``endofed.training.commits``), so the rounds continue exactly as before.
    """
    cfg = load_config(TINY, OVERRIDES)
    site = FederatedSite(load_site_config(training_site), cfg, f"repeat{int(defer)}", defer_commit=defer)
    start = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(5))
    first, _ = site.train({k: v.numpy() for k, v in encoder_state(start).items()}, RoundPlan(PRETRAIN, 1, 4, 1))
    received = {k: v.numpy().copy() for k, v in first.items()}
    once, _ = site.train(received, RoundPlan(PRETRAIN, 2, 4, 1))
    again, _ = site.train(received, RoundPlan(PRETRAIN, 2, 4, 1))  # the repeat: same inputs, same state -> same
    assert all(torch.equal(once[k], again[k]) for k in once)
    store = site.stores["mae"]
    site.wait_for_commits()
    assert not site.pending
    assert store.rounds() == [1, 2] and site.restored["mae"] == 1  # the repeat continued from round 1 again
    # The site missed round 3 (it was down): round 4 continues from its round 2 state, which is kept next to it.
    site.train(received, RoundPlan(PRETRAIN, 4, 4, 1))
    site.wait_for_commits()
    assert store.rounds() == [2, 4] and site.restored["mae"] == 2
    assert not [p.name for p in store.folder.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with pytest.raises(ValueError, match="belongs to another run"):
        site.train(received, RoundPlan(PRETRAIN, 2, 4, 1))
