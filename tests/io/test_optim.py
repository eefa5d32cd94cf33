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


def test_state_of_chosen_params_only_the_others_restart_fresh():
    """AdamW, lr 0.1, betas (0.5, 0.5), no decay; both weights start at 1 and get gradient 4, then gradient 0.

    Step 1 moves each by lr (a first Adam step is lr * sign(g)): 0.9. Step 2 (gradient 0) on a continued state:
    m_hat = b1 g / (1 + b1) = 4/3, v_hat = b2 g^2 / (1 + b2) = 16/3, so it moves by 0.1 * (4/3) / (4/sqrt(3)) =
    0.1/sqrt(3); on a fresh state m = 0: it stays. Only ``b``'s state was kept, so only ``b`` moves.
    """
    weights = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))])
    optimizer = torch.optim.AdamW(weights, lr=0.1, betas=(0.5, 0.5), weight_decay=0.0)
    (4 * (weights[0] + weights[1])).sum().backward()
    optimizer.step()
    tensors, meta = optimizer_tensors(optimizer, params=[weights[1]])
    assert {k.split(".")[1] for k in tensors} == {"1"}  # index 1 = weights[1]
    assert len(meta["param_groups"][0]["params"]) == 2  # the groups stay whole
    restored = torch.optim.AdamW(weights, lr=0.1, betas=(0.5, 0.5), weight_decay=0.0)
    restore_optimizer(restored, tensors, meta)
    restored.zero_grad()
    (0 * (weights[0] + weights[1])).sum().backward()
    restored.step()
    torch.testing.assert_close(weights[0].detach(), torch.tensor([0.9]))
    torch.testing.assert_close(weights[1].detach(), torch.tensor([0.9 - 0.1 / 3**0.5]))
