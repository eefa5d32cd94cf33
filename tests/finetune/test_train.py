import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from endofed.config import FinetuneConfig, ModelConfig
from endofed.finetune.metrics import auc
from endofed.finetune.train import (
    class_weights,
    finetune_epochs,
    label_counts,
    layer_decay_groups,
    layer_id,
    make_finetune_optimizer,
    predict,
)
from endofed.models.factory import build_classifier
from endofed.optim import lr_at

ROI, PATCH = (16, 16, 8), (8, 8, 4)
CPU = torch.device("cpu")
MODEL = ModelConfig(patch_size=PATCH, embed_dim=24, depth=2, num_heads=2, num_classes=2, drop_path=0.0)


def fresh_classifier(seed: int = 0):
    return build_classifier(MODEL, ROI, generator=torch.Generator().manual_seed(seed))


def separable_cases(n: int, seed: int = 0, missing_t1: bool = False) -> list[dict[str, torch.Tensor]]:
    """Class 1: a bright T1 / dark T2 cube in a random corner; class 0: the reverse. Noise on top."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(n):
        label = i % 2
        image = 0.3 + 0.05 * torch.randn(2, *ROI, generator=g)
        x, y = (int(v) for v in torch.randint(0, 8, (2,), generator=g))
        image[0, x : x + 8, y : y + 8] += 0.5 if label else -0.2
        image[1, x : x + 8, y : y + 8] += -0.2 if label else 0.5
        mask = torch.ones(2, *ROI, dtype=torch.bool)
        if missing_t1 and i == 0:
            image[0], mask[0] = 0.0, False
        cases.append({"image": image, "mask": mask, "label": torch.tensor(label)})
    return cases


def test_layer_ids():
    assert layer_id("encoder.patch_embed.1.weight", 12) == 0
    assert layer_id("encoder.modality_embed", 12) == 0
    assert layer_id("encoder.blocks.0.attn.qkv.weight", 12) == 1
    assert layer_id("encoder.blocks.11.mlp.fc2.bias", 12) == 12
    assert layer_id("encoder.norm.weight", 12) == 13 and layer_id("head.weight", 12) == 13


def test_layer_decay_groups_hand_checked():
    model = fresh_classifier()
    groups = layer_decay_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    decay_of = {name: g["weight_decay"] for g in groups for name in g["names"]}
    assert sorted(lr_of) == sorted(n for n, _ in model.named_parameters())  # each parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # depth 2: head 1, last block 0.5, first block 0.25, embeddings 0.5 ** 3
    expected = {
        "head.weight": 1.0,
        "head_norm.bias": 1.0,
        "encoder.norm.weight": 1.0,
        "encoder.blocks.1.attn.qkv.weight": 0.5,
        "encoder.blocks.0.mlp.fc1.bias": 0.25,
        "encoder.patch_embed.0.weight": 0.125,
        "encoder.modality_embed": 0.125,
    }
    for name, lr in expected.items():
        assert lr_of[name] == pytest.approx(lr), name
    for name in ("head.bias", "head_norm.weight", "encoder.norm.bias", "encoder.blocks.0.norm1.weight"):
        assert decay_of[name] == 0.0, name
    assert decay_of["encoder.modality_embed"] == 0.0
    for name in ("head.weight", "encoder.patch_embed.1.weight", "encoder.blocks.1.attn.proj.weight"):
        assert decay_of[name] == 0.05, name


def test_layer_decay_one_gives_one_rate():
    groups = layer_decay_groups(fresh_classifier(), lr=3e-4, weight_decay=0.0, layer_decay=1.0)
    assert {g["lr"] for g in groups} == {3e-4}


@pytest.mark.parametrize(("kwargs", "message"), [({"lr": 0.0}, "lr=0.0"), ({"layer_decay": 1.5}, "1.5")])
def test_layer_decay_bad_arguments(kwargs, message):
    args = {"lr": 1e-3, "weight_decay": 0.05, "layer_decay": 0.75} | kwargs
    with pytest.raises(ValueError, match=message):
        layer_decay_groups(fresh_classifier(), **args)


def test_class_weights_hand_checked():
    # N = 4, C = 2: w0 = 4 / (2 * 3), w1 = 4 / (2 * 1)
    assert torch.allclose(class_weights([3, 1]), torch.tensor([2 / 3, 2.0]))
    assert torch.allclose(class_weights([5, 5]), torch.ones(2))
    assert label_counts([0, 1, 1, 0, 0], 2) == [3, 2]
    with pytest.raises(ValueError, match=r"\[4, 0\]"):
        class_weights([4, 0])
    with pytest.raises(ValueError, match="2"):
        label_counts([0, 2], 2)


def test_loss_decreases_and_classes_separate():
    cases = separable_cases(16)
    loader = DataLoader(cases, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    cfg = FinetuneConfig(epochs=12, batch_size=8, lr=2e-3, warmup_epochs=1, weight_decay=0.0, layer_decay=0.9)
    model = fresh_classifier()
    history = finetune_epochs(model, loader, cfg, CPU, seed=0, class_counts=[8, 8])
    assert [h["epoch"] for h in history] == list(range(12)) and all(h["steps"] == 2 for h in history)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    probs = predict(model, DataLoader(separable_cases(8, seed=1), batch_size=4), CPU)
    assert probs.shape == (8,) and ((probs >= 0) & (probs <= 1)).all()
    assert auc([i % 2 for i in range(8)], probs) == 1.0


def test_every_parameter_gets_a_gradient_also_with_a_missing_modality():
    loader = DataLoader(separable_cases(4, missing_t1=True), batch_size=4)
    cfg = FinetuneConfig(epochs=1, batch_size=4, class_weighted=False)
    model = fresh_classifier()
    finetune_epochs(model, loader, cfg, CPU, seed=0)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_schedule_follows_lr_at_with_layer_scales():
    loader = DataLoader(separable_cases(8), batch_size=4)
    cfg = FinetuneConfig(epochs=3, batch_size=4, lr=1e-3, warmup_epochs=1, layer_decay=0.5)
    model = fresh_classifier()
    optimizer = make_finetune_optimizer(model, cfg, CPU)
    steps: list[dict[str, float]] = []
    finetune_epochs(model, loader, cfg, CPU, seed=0, class_counts=[4, 4], optimizer=optimizer, on_step=steps.append)
    assert [s["lr"] for s in steps] == pytest.approx([lr_at(i, 6, 2, 1e-3) for i in range(6)])
    last = lr_at(5, 6, 2, 1e-3)
    assert {round(g["lr"] / last, 6) for g in optimizer.param_groups} == {0.125, 0.25, 0.5, 1.0}


def test_same_seed_same_run():
    cfg = FinetuneConfig(epochs=2, batch_size=4, warmup_epochs=0)
    runs = []
    for _ in range(2):
        loader = DataLoader(separable_cases(8), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
        runs.append(
            [h["loss"] for h in finetune_epochs(fresh_classifier(), loader, cfg, CPU, seed=3, class_counts=[4, 4])]
        )
    assert runs[0] == runs[1]


def test_stochastic_depth_is_seeded_and_leaves_the_global_rng_alone():
    cfg = FinetuneConfig(epochs=2, batch_size=4, warmup_epochs=0)
    model_cfg = dataclasses.replace(MODEL, drop_path=0.5)
    weights = []
    for noise in (0, 7):
        torch.manual_seed(noise)  # the caller's global RNG differs between the two runs
        model = build_classifier(model_cfg, ROI, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(separable_cases(8), batch_size=4)
        before = torch.random.get_rng_state()
        finetune_epochs(model, loader, cfg, CPU, seed=3, class_counts=[4, 4])
        assert torch.equal(torch.random.get_rng_state(), before)  # fine-tuning drew nothing from it
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_refuses_missing_class_counts_and_empty_loader():
    cfg = FinetuneConfig(epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="class_counts"):
        finetune_epochs(fresh_classifier(), DataLoader(separable_cases(4), batch_size=4), cfg, CPU, seed=0)
    with pytest.raises(ValueError, match="0 batches"):
        finetune_epochs(fresh_classifier(), DataLoader([], batch_size=4), cfg, CPU, seed=0, class_counts=[1, 1])


def test_a_one_class_training_set_is_the_sites_data_not_a_bug():
    from endofed.errors import DataError
    from endofed.federated.site_errors import SITE_DATA, category

    cfg = FinetuneConfig(epochs=1, batch_size=4)
    loader = DataLoader(separable_cases(4), batch_size=4)
    with pytest.raises(DataError, match=r"fewer than two classes \(cases per class \[0, 3\]\)") as caught:
        finetune_epochs(fresh_classifier(), loader, cfg, CPU, seed=0, class_counts=[0, 3])
    assert category(caught.value) == SITE_DATA  # a site replies "data check failed", not "endofed failed"


def test_predict_keeps_order_and_restores_training_mode():
    model = fresh_classifier()
    model.train()
    cases = separable_cases(6)
    together = predict(model, DataLoader(cases, batch_size=6), CPU)
    one_by_one = [predict(model, DataLoader([c], batch_size=1), CPU)[0] for c in cases]
    assert together == pytest.approx(one_by_one, abs=1e-6)
    assert model.training
