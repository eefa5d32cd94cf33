"""The optimisation rules both training loops share (endofed.optim): hand-checked values."""

import math

import pytest
import torch
from torch import nn

from endofed.config import ModelConfig
from endofed.models.factory import build_mae
from endofed.optim import decays, epoch_seed, lr_at, param_groups


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.5), (1, 1.0), (2, 1.0), (6, 0.5), (4, 0.5 * (1 + math.cos(math.pi / 4))), (10, 0.0), (12, 0.0)],
)
def test_lr_hand_checked(step, expected):
    # peak 1, warm-up 2 steps (0.5, 1.0), then a half cosine over the remaining 8 steps
    assert lr_at(step, total=10, warmup=2, peak=1.0) == pytest.approx(expected)


def test_lr_floor_and_no_warmup():
    assert lr_at(0, total=4, warmup=0, peak=2.0, floor=0.5) == pytest.approx(2.0)
    assert lr_at(2, total=4, warmup=0, peak=2.0, floor=0.5) == pytest.approx(1.25)
    assert lr_at(4, total=4, warmup=0, peak=2.0, floor=0.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"step": -1}, "-1"), ({"total": 0}, "total=0"), ({"warmup": -2}, "-2"), ({"floor": 3.0}, "3.0")],
)
def test_lr_bad_arguments(kwargs, message):
    args = {"step": 0, "total": 10, "warmup": 1, "peak": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        lr_at(**args)


def test_epoch_seeds_hand_checked_and_distinct():
    assert epoch_seed(2, 3) == 2 * 1_000_003 + 3
    assert epoch_seed(2**62, 0) == 2**62  # 2**62 * odd wraps modulo 2**63 back to 2**62
    assert len({epoch_seed(s, e) for s in range(3) for e in range(3)}) == 9


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 2)  # weight (2, 3): decayed; bias (2,): not
        self.norm = nn.LayerNorm(2)  # 1-D: not decayed
        self.modality_embed = nn.Parameter(torch.zeros(2, 2))  # 2-D, but an embedding: not decayed
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 2))
        self.frozen = nn.Parameter(torch.zeros(2, 2), requires_grad=False)  # in no group at all


def test_decay_rule_hand_checked():
    named = dict(_Tiny().named_parameters())
    assert {name for name, p in named.items() if decays(name, p)} == {"proj.weight", "frozen"}
    decay, no_decay = param_groups(_Tiny(), 0.1)
    assert [p.shape for p in decay["params"]] == [(2, 3)]  # type: ignore[union-attr]
    assert len(no_decay["params"]) == 5  # type: ignore[arg-type]
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_param_groups_of_the_mae_do_not_decay_biases_norms_and_embeddings():
    cfg = ModelConfig(
        patch_size=(8, 8, 4), embed_dim=48, depth=2, num_heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4
    )
    mae = build_mae(cfg, (16, 16, 8), generator=torch.Generator().manual_seed(0))
    decay, no_decay = param_groups(mae, 0.05)
    names = {id(p): n for n, p in mae.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}  # type: ignore[union-attr]
    kept = {names[id(p)] for p in no_decay["params"]}  # type: ignore[union-attr]
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert {"mask_token", "decoder_modality_embed", "encoder.modality_embed", "encoder.norm.weight"} <= kept
    assert "encoder.blocks.0.attn.qkv.weight" in decayed and "encoder.patch_embed.0.weight" in decayed
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
