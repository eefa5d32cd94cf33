"""What the pre-training and the fine-tuning loop share about optimisation: schedule, epoch seeds, decay rule.

* :func:`lr_at`: linear warm-up, then half-cosine decay (MAE's ``util/lr_sched.py``, per optimiser step).
* :func:`epoch_seed`: the seed of an epoch's generator (masks in pre-training, augmentation in fine-tuning),
  so an epoch is reproducible whether it runs alone or in a sequence.
* :func:`decays` and :data:`NO_DECAY_NAMES`: which parameters get weight decay (matrices) and which do not
  (biases, norms, learned embeddings and tokens).
* :func:`param_groups`: the two AdamW groups of that rule (pre-training; fine-tuning splits further by layer,
  see :func:`endofed.finetune.train.layer_decay_groups`).

Pure numerics, hand-checked in ``tests/test_optim.py``. (Saving an optimiser's state is
:mod:`endofed.io.optim`.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_NAMES = ("modality_embed", "mask_token")  # embeddings and tokens, like biases and norms, are not decayed


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float = 0.0) -> float:
    """Learning rate at an optimiser step: linear warm-up, then half-cosine decay to ``floor``.

    Warm-up: ``peak * (step + 1) / warmup`` for ``step < warmup`` (the first step is not wasted at 0).
    Then ``floor + (peak - floor) * (1 + cos(pi * t)) / 2`` with ``t = (step - warmup) / (total - warmup)``,
    clamped to 1 (steps past ``total`` stay at ``floor``).

    Args:
        step: 0-based optimiser step.
        total: total optimiser steps of the schedule.
        warmup: warm-up steps (0 = none).
        peak: learning rate at the end of warm-up.
        floor: final learning rate.

    Returns:
        The learning rate.

    Raises:
        ValueError: on a negative step or warm-up, a non-positive total, or ``peak < floor``.
    """
    if step < 0 or warmup < 0 or total <= 0:
        raise ValueError(
            f"need step >= 0, warmup >= 0 and total > 0, got step={step!r}, warmup={warmup!r}, total={total!r}"
        )
    if peak < floor or floor < 0:
        raise ValueError(f"need 0 <= floor <= peak, got floor={floor!r}, peak={peak!r}")
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of an epoch's generator, derived from the run seed and the epoch index."""
    return (seed * 1_000_003 + epoch) % (2**63)


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether weight decay applies: matrices yes; biases, norms and learned embeddings no."""
    return param.ndim >= 2 and not name.endswith(NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Split trainable parameters into decayed and not decayed ones (:func:`decays`).

    Args:
        model: the model.
        weight_decay: decay of the first group.

    Returns:
        Two AdamW parameter groups, decayed first, each in ``named_parameters()`` order.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if decays(name, param) else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
