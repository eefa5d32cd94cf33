"""The FedProx proximal term a site adds to its loss: ``mu / 2 * sum ||w - w_global||^2`` over the encoder.

Two classic bugs are guarded against here and tested: Flower's own FedProx docstring once used the
un-squared norm (fixed in flwrlabs/flower#2210), and FL-bench#165 took the "global" weights as a shallow
copy of the live ones, which made the term identically zero. :func:`global_snapshot` takes detached
copies, and :func:`proximal_term` refuses a global tensor that shares memory with a live parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def global_snapshot(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the encoder's parameters, taken right after loading the round's global weights.

    Args:
        encoder: the site's encoder (``model.encoder``).

    Returns:
        ``{name: tensor}`` on the parameters' device and dtype, sharing no memory with them.
    """
    return {name: param.detach().clone() for name, param in encoder.named_parameters()}


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors are backed by the same storage (aliases or views of each other)."""
    if a.numel() == 0 or b.numel() == 0:
        return False
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def proximal_term(model_encoder: nn.Module, global_state: Mapping[str, torch.Tensor], mu: float) -> torch.Tensor:
    """``mu / 2 * sum_k ||w_k - w_global_k||^2`` over the encoder parameters named in ``global_state``.

    Gradients flow to the live weights only: ``d/dw = mu * (w - w_global)``.

    Args:
        model_encoder: the site's encoder (its ``named_parameters()`` are ``w``).
        global_state: detached copies of the round's global weights (:func:`global_snapshot`), keyed by
            parameter name. Parameters left out (e.g. LayerNorms kept local) are not pulled.
        mu: proximal coefficient (FedProx ``proximal-mu``), ``>= 0``.

    Returns:
        A scalar tensor on the parameters' device. Example: one parameter ``w = 3``, ``w_global = 1``,
        ``mu = 0.5`` gives ``0.5 / 2 * 4 = 1.0``.

    Raises:
        ValueError: on ``mu < 0``, a key that is not a parameter, a shape mismatch, a global tensor that
            aliases the live weight (a shallow copy, which would make the term zero), or no overlap at all.
    """
    if not mu >= 0:
        raise ValueError(f"proximal mu must be >= 0, got {mu!r}")
    params = dict(model_encoder.named_parameters())
    unknown = sorted(set(global_state) - set(params))
    if unknown:
        raise ValueError(f"global state has keys that are not encoder parameters: {unknown[:5]!r}")
    if not global_state:
        raise ValueError("global state is empty: nothing to compute a proximal term against")
    squares = []
    for name, target in global_state.items():
        weight = params[name]
        if target.shape != weight.shape:
            raise ValueError(f"global {name!r} has shape {tuple(target.shape)}, parameter has {tuple(weight.shape)}")
        if _shares_memory(target, weight):
            raise ValueError(f"global {name!r} aliases the live parameter; pass a detached copy (global_snapshot)")
        reference = target.detach().to(device=weight.device, dtype=weight.dtype)
        squares.append((weight - reference).pow(2).sum())
    return (mu / 2) * torch.stack(squares).sum()
