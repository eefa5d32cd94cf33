"""EagerAdamW: torch's AdamW, bitwise, without importing torch._dynamo in a fresh process."""

from __future__ import annotations

import functools
import subprocess
import sys

import torch
from torch import nn

from endofed.config import load_config
from endofed.eager import EagerAdamW, plain_step, skip_dynamo_marks
from endofed.finetune.train import make_finetune_optimizer
from endofed.models import build_classifier
from endofed.optim import param_groups
from endofed.ssl.pretrain import make_optimizer
from tests.helpers import ROOT, TINY


def _model(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 2))


def _train(optimizer_class: type[torch.optim.Optimizer], steps: int = 5) -> tuple[nn.Module, dict]:
    model = _model()
    optimizer = optimizer_class(param_groups(model, 0.05), lr=1e-2, betas=(0.9, 0.95))
    data = torch.Generator().manual_seed(9)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 1e-2 / (step + 1)  # a schedule, as the loops set it
        loss = model(torch.randn(4, 6, generator=data)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer.state_dict()


def test_eager_adamw_matches_torch_adamw_bitwise_weights_and_moments():
    ours, our_state = _train(EagerAdamW)
    theirs, their_state = _train(torch.optim.AdamW)
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert our_state["param_groups"] == their_state["param_groups"]
    for index, moments in their_state["state"].items():
        for key, value in moments.items():
            assert torch.equal(our_state["state"][index][key], value), (index, key)
    assert not torch.equal(ours[0].weight, _model()[0].weight)  # it did train


def test_a_fresh_process_trains_and_saves_without_importing_torchs_compiler_stack():
    code = """
import sys, torch
from endofed.eager import EagerAdamW
model = torch.nn.Linear(4, 3)
optimizer = EagerAdamW(model.parameters(), lr=1e-3)
schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5)
for _ in range(2):
    model(torch.ones(2, 4)).sum().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
optimizer.load_state_dict(optimizer.state_dict())
print(len(optimizer.state), "torch._dynamo" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr


def test_endofeds_optimisers_are_eager():
    cfg, cpu = load_config(TINY), torch.device("cpu")
    assert isinstance(make_optimizer(_model(), cfg.pretrain, cpu), EagerAdamW)
    classifier = build_classifier(cfg.model, cfg.data.roi_size)
    assert isinstance(make_finetune_optimizer(classifier, cfg.finetune, cpu), EagerAdamW)


def test_a_step_under_unknown_wrappers_is_left_to_torch():
    class Plain(torch.optim.SGD):
        def step(self, closure=None):  # no torch wrapper at all
            return super().step(closure)

    def foreign(func):
        @functools.wraps(func)
        def other(*args, **kwargs):
            return func(*args, **kwargs)

        return other

    class Decorated(torch.optim.SGD):
        step = foreign(torch.optim.SGD.step)  # a wrapper endofed does not know sits on top

    assert plain_step(Plain) is None and plain_step(Decorated) is None
    assert plain_step(torch.optim.AdamW) is not None  # the installed torch's chain is the known one


def test_marks_are_left_alone_once_dynamo_is_loaded():
    import torch._dynamo  # noqa: F401 (this test process may compile: nothing is changed then)

    assert skip_dynamo_marks() == []
