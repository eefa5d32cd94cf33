from __future__ import annotations

import torch

from endofed.io.optim import optimizer_tensors, restore_optimizer


def _trained_optimizer(model: torch.nn.Module) -> torch.optim.AdamW:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.95))
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
    return optimizer


def test_optimizer_state_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = _trained_optimizer(model)
    tensors, meta = optimizer_tensors(optimizer)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert {k.split(".", 2)[2] for k in tensors} == {"step", "exp_avg", "exp_avg_sq"}
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    restored = torch.optim.AdamW(twin.parameters(), lr=0.1, betas=(0.9, 0.95))
    restore_optimizer(restored, tensors, meta)
    for m, opt in ((model, optimizer), (twin, restored)):
        opt.zero_grad()
        m(torch.ones(2, 3)).sum().backward()
        opt.step()
    torch.testing.assert_close(model.weight, twin.weight)
