import math

import pytest
import torch
from torch.utils.data import DataLoader

from endofed.config import ModelConfig, PretrainConfig
from endofed.models.factory import build_mae
from endofed.optim import lr_at
from endofed.ssl.pretrain import make_optimizer, pretrain_epochs

ROI, PATCH = (16, 16, 8), (8, 8, 4)
CPU = torch.device("cpu")
MODEL = ModelConfig(
    patch_size=PATCH, embed_dim=48, depth=2, num_heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4
)


def ramp_volumes(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Volumes whose every patch is the same ramp along one axis (axis = case % 3), scaled per modality.

    Normalised, a hidden patch is predictable from the visible ones: a model that learns does much better
    than predicting zeros (loss 1).
    """
    g = torch.Generator().manual_seed(seed)
    within = torch.meshgrid(*(torch.arange(s) % p for s, p in zip(ROI, PATCH, strict=True)), indexing="ij")
    cases = []
    for i in range(n):
        scale = 1 + torch.rand(2, 1, 1, 1, generator=g)
        image = within[i % 3].float()[None] * scale + 0.1 * torch.randn(2, *ROI, generator=g)
        cases.append({"image": image, "mask": torch.ones(2, *ROI, dtype=torch.bool)})
    return cases


def fresh_mae(seed: int = 0):
    return build_mae(MODEL, ROI, generator=torch.Generator().manual_seed(seed))


def test_loss_decreases_on_structured_data():
    loader = DataLoader(ramp_volumes(12), batch_size=6)
    cfg = PretrainConfig(epochs=10, batch_size=6, lr=3e-3, warmup_epochs=1, weight_decay=0.0)
    steps: list[dict[str, float]] = []
    history = pretrain_epochs(fresh_mae(), loader, cfg, CPU, seed=0, on_step=steps.append)
    assert len(steps) == 20 and [s["step"] for s in steps] == list(range(1, 21))
    first, last = sum(s["loss"] for s in steps[:4]) / 4, sum(s["loss"] for s in steps[-4:]) / 4
    assert last < 0.75 * first, (first, last)
    assert history[-1]["loss"] < history[0]["loss"]


def test_metrics_accumulation_and_schedule():
    loader = DataLoader(ramp_volumes(5), batch_size=2)  # 3 micro-batches: 2 steps per epoch (2 + 1)
    cfg = PretrainConfig(epochs=4, batch_size=2, accumulation_steps=2, lr=1e-3, warmup_epochs=1)
    history = pretrain_epochs(fresh_mae(), loader, cfg, CPU, seed=0, num_epochs=2)
    assert [h["epoch"] for h in history] == [0.0, 1.0]
    assert [h["steps"] for h in history] == [2.0, 2.0]
    assert [h["volumes"] for h in history] == [5.0, 5.0]
    assert set(history[0]) == {"epoch", "loss", "lr", "steps", "volumes", "seconds", "volumes_per_s"}
    assert history[0]["lr"] == pytest.approx(1e-3)  # end of the 2-step warm-up
    assert history[1]["lr"] == pytest.approx(lr_at(3, total=8, warmup=2, peak=1e-3))
    assert all(h["volumes_per_s"] > 0 and math.isfinite(h["loss"]) for h in history)


def test_resuming_at_an_epoch_continues_the_same_run():
    data = ramp_volumes(4)
    cfg = PretrainConfig(epochs=3, batch_size=2, lr=1e-3, warmup_epochs=1)
    straight = pretrain_epochs(fresh_mae(), DataLoader(data, batch_size=2), cfg, CPU, seed=5)
    mae = fresh_mae()
    optimizer = make_optimizer(mae, cfg, CPU)
    parts = [
        pretrain_epochs(
            mae, DataLoader(data, batch_size=2), cfg, CPU, seed=5, optimizer=optimizer, first_epoch=first, num_epochs=1
        )[0]
        for first in range(3)
    ]
    assert [p["loss"] for p in parts] == pytest.approx([s["loss"] for s in straight], rel=1e-5)
    assert [p["lr"] for p in parts] == pytest.approx([s["lr"] for s in straight])


def test_tokens_outside_the_field_of_view_do_not_count():
    data = ramp_volumes(2)
    for case in data:
        case["mask"] = torch.zeros_like(case["mask"])
    cfg = PretrainConfig(epochs=1, batch_size=2, lr=1e-3, warmup_epochs=0)
    assert pretrain_epochs(fresh_mae(), DataLoader(data, batch_size=2), cfg, CPU, seed=0)[0]["loss"] == 0.0


@pytest.mark.parametrize("mode", ["shared", "independent", "modality_drop"])
def test_every_mask_mode_trains(mode):
    cfg = PretrainConfig(epochs=1, batch_size=2, lr=1e-3, warmup_epochs=0, mask_mode=mode, modality_drop_prob=0.5)
    history = pretrain_epochs(fresh_mae(), DataLoader(ramp_volumes(4), batch_size=2), cfg, CPU, seed=0)
    assert math.isfinite(history[0]["loss"]) and history[0]["loss"] > 0


def test_bad_arguments_are_refused():
    cfg = PretrainConfig(epochs=2, batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        pretrain_epochs(fresh_mae(), [], cfg, CPU, seed=0)
    with pytest.raises(ValueError, match="num_epochs=0"):
        pretrain_epochs(fresh_mae(), DataLoader(ramp_volumes(2)), cfg, CPU, seed=0, first_epoch=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile_model", [False, True])
def test_cuda_bf16_pretraining(compile_model):
    cfg = PretrainConfig(epochs=2, batch_size=2, lr=1e-3, warmup_epochs=0, compile=compile_model)
    loader = DataLoader(ramp_volumes(4), batch_size=2, pin_memory=True)
    mae = fresh_mae()
    history = pretrain_epochs(mae, loader, cfg, torch.device("cuda"), seed=0)
    assert all(math.isfinite(h["loss"]) for h in history)
    assert next(mae.parameters()).dtype == torch.float32  # master weights stay fp32
