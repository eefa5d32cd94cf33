"""A site refuses a poisoned global encoder or a diverged round and keeps its state, byte for byte."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from endofed.config import load_config, load_site_config
from endofed.federated.protocol import FINETUNE, PRETRAIN
from endofed.federated.site_errors import (
    SITE_DIVERGED,
    SITE_REFUSED_GLOBAL,
    GlobalRefused,
    StateNotFinite,
    category,
)
from endofed.federated.weights import encoder_state
from endofed.models import build_mae
from endofed.training import federated_site
from endofed.training.federated_site import FederatedSite, RoundPlan
from endofed.training.received_checks import max_change_ratio
from endofed.training.site_state import KnownGlobal
from tests.helpers import OVERRIDES, TINY

ROUNDS = 4


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def site_after_two_rounds(training_site: Path) -> tuple[FederatedSite, dict[str, np.ndarray]]:
    """A site that trained pre-training rounds 1 and 2 (the first with no known global); returns it and round 2's
    global."""
    cfg = load_config(TINY, OVERRIDES)
    site = FederatedSite(load_site_config(training_site), cfg, "guard")
    start = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(5))
    first = {k: v.numpy() for k, v in encoder_state(start).items()}
    assert site.check_received(first, PRETRAIN, 1) is None  # round 1: every check but the norm bound
    trained, _ = site.train(first, RoundPlan(PRETRAIN, 1, ROUNDS, 1))
    received = {k: v.numpy().copy() for k, v in trained.items()}
    site.train(received, RoundPlan(PRETRAIN, 2, ROUNDS, 1))
    return site, received


def test_a_poisoned_global_is_refused_and_the_local_state_stays_byte_identical(site_after_two_rounds):
    site, received = site_after_two_rounds
    before = _files(site.state_dir)
    key = next(iter(received))
    one_nan = received[key].copy()
    one_nan.flat[0] = np.nan
    poisoned = {
        "one NaN": {**received, key: one_nan},
        "1e36 x": {k: v * np.float32(1e36) for k, v in received.items()},
        "float64": {**received, key: received[key].astype(np.float64)},
        "a key less": {k: v for k, v in received.items() if k != key},
    }
    for name, encoder in poisoned.items():
        with pytest.raises(GlobalRefused) as caught:
            site.train(encoder, RoundPlan(PRETRAIN, 3, ROUNDS, 1))
        assert category(caught.value) == SITE_REFUSED_GLOBAL, name
        assert _files(site.state_dir) == before, name
    with pytest.raises(GlobalRefused, match="NaN or Inf"):
        site.evaluate(poisoned["one NaN"])
    assert _files(site.state_dir) == before
    # The clean global of the same round is accepted: the site continues from round 2 and replies finite.
    state, _ = site.train(received, RoundPlan(PRETRAIN, 3, ROUNDS, 1))
    assert site.restored["mae"] == 2 and all(bool(torch.isfinite(v).all()) for v in state.values())


def test_the_norm_bound_follows_the_rounds_in_between(site_after_two_rounds):
    """Twice the largest per-round change is refused in the next round, accepted three rounds later."""
    site, received = site_after_two_rounds
    direction = {k: np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) for k, v in received.items()}
    scale = np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in received.values()))
    step = np.sqrt(sum(float((d.astype(np.float64) ** 2).sum()) for d in direction.values()))
    far = {k: v + direction[k] * np.float32(2 * max_change_ratio(1) * scale / step)
           for k, v in received.items()}  # fmt: skip
    with pytest.raises(GlobalRefused, match=r"norm away \(bound 0.5\)"):
        site.check_received(far, PRETRAIN, 3)
    assert site.check_received(far, PRETRAIN, 4) == pytest.approx(1.0, rel=1e-3)  # 2 rounds apart: bound 1.0
    assert site.check_received(far, FINETUNE, 1) == pytest.approx(1.0, rel=1e-3)  # pre-training rounds 3, 4 + 1
    # an int8 delta's base (proven by its decoded digest) is the reference instead of the newest saved global
    assert site.check_received(far, PRETRAIN, 3, base=KnownGlobal(PRETRAIN, 2, ROUNDS, far)) == 0.0
    with pytest.raises(GlobalRefused, match="norm away"):
        site.check_received(received, PRETRAIN, 3, base=KnownGlobal(PRETRAIN, 2, ROUNDS, far))


def test_a_round_that_ends_non_finite_is_refused_and_nothing_of_it_is_saved(site_after_two_rounds, monkeypatch):
    site, received = site_after_two_rounds
    before = _files(site.state_dir)
    real = federated_site.run_stage

    def diverging(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if n.startswith("decoder")).fill_(float("inf"))
        return result

    monkeypatch.setattr(federated_site, "run_stage", diverging)
    with pytest.raises(StateNotFinite, match="NaN or Inf") as caught:
        site.train(received, RoundPlan(PRETRAIN, 3, ROUNDS, 1))
    assert category(caught.value) == SITE_DIVERGED
    assert _files(site.state_dir) == before  # not even the subjects of the refused round are recorded
    monkeypatch.setattr(federated_site, "run_stage", real)
    site.train(received, RoundPlan(PRETRAIN, 3, ROUNDS, 1))
    assert site.restored["mae"] == 2


def test_a_torn_newest_round_falls_back_to_the_one_before_with_one_log_line(site_after_two_rounds, caplog):
    site, received = site_after_two_rounds
    site.stores["mae"].round_path(2).write_bytes(b"")  # e.g. a disk that lost the last write
    with caplog.at_level(logging.WARNING):
        state, _ = site.train(received, RoundPlan(PRETRAIN, 3, ROUNDS, 1))
    (line,) = caplog.records
    assert "round 2" in line.getMessage() and line.getMessage().endswith("continuing from round 1")
    assert site.restored["mae"] == 1 and site.stores["mae"].rounds() == [1, 3]
    assert all(bool(torch.isfinite(v).all()) for v in state.values())


def test_under_central_dp_the_bound_admits_the_noise_of_a_release(training_site):
    """A DP release moves the tiny global by ~2x its norm (the CPU DP test's setting): the site accepts it."""
    from endofed.federated.privacy import noise_std, private_average

    cfg = load_config(TINY, [*OVERRIDES, "federation.dp_noise_multiplier=1.1", "federation.dp_clipping_norm=0.5"])
    site = FederatedSite(load_site_config(training_site), cfg, "guard-dp")
    start = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(5))
    first = {k: v.numpy() for k, v in encoder_state(start).items()}
    trained, _ = site.train(first, RoundPlan(PRETRAIN, 1, ROUNDS, 1))
    base = {k: v.numpy() for k, v in trained.items()}
    sites = cfg.federation.round_quorum
    noisy = private_average(base, [], sites, noise_std(1.1, 0.5, sites), np.random.default_rng(1))
    assert site.check_received(noisy, PRETRAIN, 2) > max_change_ratio(1)  # beyond the bound without DP ...
    with pytest.raises(GlobalRefused):  # ... and a NaN is still refused
        site.check_received({k: v * np.float32(np.nan) for k, v in noisy.items()}, PRETRAIN, 2)
