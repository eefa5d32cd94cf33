from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from endofed.federated.proximal import global_snapshot, proximal_term


class _Scalar(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value]))


class _Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor([3.0]))


def test_one_parameter_by_hand_value_and_gradient():
    model = _Scalar(3.0)
    term = proximal_term(model, {"w": torch.tensor([1.0])}, mu=0.5)
    assert term.item() == pytest.approx(1.0)  # 0.5 / 2 * (3 - 1)^2
    term.backward()
    assert model.w.grad is not None
    assert model.w.grad.item() == pytest.approx(1.0)  # mu * (w - w_global) = 0.5 * 2


def test_the_norm_is_squared():
    model = _Two()
    term = proximal_term(model, {"a": torch.zeros(2), "b": torch.ones(1)}, mu=2.0)
    # ||w - w_g||^2 = 1 + 4 + 4 = 9, times mu / 2 = 1 -> 9; the un-squared norm would give 3
    assert term.item() == pytest.approx(9.0)


def test_mu_zero_gives_zero_and_a_zero_gradient():
    model = _Scalar(3.0)
    term = proximal_term(model, {"w": torch.tensor([1.0])}, mu=0.0)
    term.backward()
    assert term.item() == 0.0 and model.w.grad is not None and model.w.grad.item() == 0.0


def test_only_the_named_parameters_are_pulled():
    model = _Two()
    term = proximal_term(model, {"b": torch.tensor([1.0])}, mu=1.0)  # a stays local (e.g. a LayerNorm)
    assert term.item() == pytest.approx(2.0)  # 1 / 2 * (3 - 1)^2


def test_global_snapshot_is_a_deep_copy_so_the_term_grows_after_a_step():
    model = _Scalar(3.0)
    snapshot = global_snapshot(model)
    assert proximal_term(model, snapshot, mu=1.0).item() == 0.0
    with torch.no_grad():
        model.w.add_(0.5)  # what an optimiser step does, in place
    assert snapshot["w"].item() == 3.0
    assert proximal_term(model, snapshot, mu=1.0).item() == pytest.approx(0.125)  # 1/2 * 0.5^2


def test_snapshot_gets_no_gradient():
    model = _Scalar(3.0)
    snapshot = global_snapshot(model)
    assert not snapshot["w"].requires_grad
    with torch.no_grad():
        model.w.add_(1.0)
    proximal_term(model, snapshot, mu=1.0).backward()
    assert snapshot["w"].grad is None


@pytest.mark.parametrize(
    "shallow",
    [
        lambda m: dict(m.named_parameters()),  # FL-bench#165: the "global" dict holds the live tensors
        lambda m: copy.copy(dict(m.named_parameters())),  # a shallow copy of the dict does not help
        lambda m: {k: p.data for k, p in m.named_parameters()},  # .data is a view of the same memory
        lambda m: {k: p.detach() for k, p in m.named_parameters()},  # detach without clone too
    ],
)
def test_aliases_of_the_live_weights_are_refused(shallow):
    model = _Scalar(3.0)
    with pytest.raises(ValueError, match="aliases the live parameter"):
        proximal_term(model, shallow(model), mu=1.0)


def test_tiny_encoder_by_hand(tiny_mae):
    encoder = tiny_mae.encoder
    snapshot = global_snapshot(encoder)
    numel = sum(p.numel() for p in encoder.parameters())
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(0.1)
    term = proximal_term(encoder, snapshot, mu=0.2)
    assert term.item() == pytest.approx(0.2 / 2 * numel * 0.01, rel=1e-4)
    term.backward()
    grad = encoder.norm.weight.grad
    assert grad is not None
    torch.testing.assert_close(grad, torch.full_like(grad, 0.2 * 0.1), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    ("state", "mu", "message"),
    [
        ({"w": torch.tensor([1.0])}, -0.1, "mu must be >= 0"),
        ({"w": torch.tensor([1.0])}, float("nan"), "mu must be >= 0"),
        ({"v": torch.tensor([1.0])}, 1.0, "not encoder parameters: \\['v'\\]"),
        ({"w": torch.tensor([1.0, 2.0])}, 1.0, r"'w' has shape \(2,\), parameter has \(1,\)"),
        ({}, 1.0, "empty"),
    ],
)
def test_bad_input_is_refused(state, mu, message):
    with pytest.raises(ValueError, match=message):
        proximal_term(_Scalar(3.0), state, mu)
