"""The masked-image-modelling pre-training loop at one site (returns metrics, prints nothing).

One optimiser step = ``accumulation_steps`` micro-batches. The learning rate follows :func:`endofed.optim.lr_at`
over the whole budget of ``PretrainConfig.epochs`` epochs, so a federated client that runs ``local_epochs`` per
round passes ``first_epoch`` and keeps its optimiser (and its state) between rounds. Masks are drawn on ``device``
from a generator seeded by ``(seed, epoch)``: an epoch is reproducible whether it runs alone or in a sequence.

On CUDA: bf16 autocast (master weights stay fp32), fused AdamW, optional ``torch.compile``. On CPU: fp32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from endofed.config import PretrainConfig
from endofed.eager import EagerAdamW
from endofed.models.mae import MaskedAutoencoder3D
from endofed.models.patches import patchify
from endofed.optim import epoch_seed, lr_at, param_groups
from endofed.ssl.loss import masked_patch_mse
from endofed.ssl.masking import make_mask, num_visible, patch_validity
from endofed.ssl.prefetch import device_batches

LOGGER = logging.getLogger(__name__)
ADAMW_BETAS = (0.9, 0.95)  # MAE's choice for pre-training

StepCallback = Callable[[dict[str, float]], None]


class SizedLoader(Protocol):
    """What the loop needs from a data loader: ``len`` and iteration over ``{"image", ["mask"]}`` batches."""

    def __len__(self) -> int:
        """Number of micro-batches per epoch."""

    def __iter__(self) -> Iterator[Mapping[str, torch.Tensor]]:
        """Yield batches with ``image (B, M, X, Y, Z)`` and optionally ``mask`` (same shape, bool)."""


def make_optimizer(model: nn.Module, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`endofed.optim.param_groups`, fused on CUDA.

    Args:
        model: the model (already on ``device``).
        cfg: pre-training config (``lr``, ``weight_decay``).
        device: where the model lives.

    Returns:
        The optimiser.
    """
    groups = param_groups(model, cfg.weight_decay)
    return EagerAdamW(groups, lr=cfg.lr, betas=ADAMW_BETAS, fused=device.type == "cuda")


@dataclass(frozen=True)
class _Plan:
    """Per-call constants of the loop."""

    total_steps: int
    warmup_steps: int
    visible: int
    device: torch.device


def _micro_batch_loss(
    forward: Callable[..., torch.Tensor],
    model: MaskedAutoencoder3D,
    batch: Mapping[str, torch.Tensor],
    cfg: PretrainConfig,
    plan: _Plan,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int]:
    """Loss of one micro-batch and its number of volumes."""
    enc = model.encoder
    image = batch["image"]  # (B, M, X, Y, Z), already on the device
    size = image.shape[0]
    mask = make_mask(
        cfg.mask_mode,
        size,
        enc.num_modalities,
        enc.tokens_per_modality,
        cfg.mask_ratio,
        generator,
        cfg.modality_drop_prob,
    )  # (B, N) on device
    with torch.autocast(plan.device.type, dtype=torch.bfloat16, enabled=plan.device.type == "cuda"):
        pred = forward(image, mask, plan.visible)  # (B, N, P)
    valid = batch.get("mask")
    token_valid = None if valid is None else patch_validity(valid, enc.patch_size)
    return masked_patch_mse(pred, patchify(image, enc.patch_size), mask, token_valid), size


def _run_epoch(
    model: MaskedAutoencoder3D,
    loader: SizedLoader,
    optimizer: torch.optim.Optimizer,
    cfg: PretrainConfig,
    plan: _Plan,
    generator: torch.Generator,
    first_step: int,
    forward: Callable[..., torch.Tensor] | None = None,
    on_step: StepCallback | None = None,
    regulariser: Callable[[], torch.Tensor] | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` with gradient accumulation; a trailing partial group still makes a step.

    ``regulariser()`` (e.g. FedProx's proximal term) is added to every optimiser step's objective, not to the
    reported loss.

    Returns ``loss`` (mean over micro-batches), ``lr`` (last), ``steps``, ``volumes``, ``seconds``, ``volumes_per_s``.
    """
    forward = forward or model
    model.train()
    batches = len(loader)
    loss_sum = torch.zeros((), device=plan.device)  # accumulated on the device: no per-step host sync
    volumes, step, lr = 0, first_step, 0.0
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for index, batch in enumerate(device_batches(loader, plan.device)):
        group_start = index - index % cfg.accumulation_steps
        group_size = min(cfg.accumulation_steps, batches - group_start)
        loss, size = _micro_batch_loss(forward, model, batch, cfg, plan, generator)
        objective = loss if regulariser is None else loss + regulariser()
        (objective / group_size).backward()
        loss_sum += loss.detach()
        volumes += size
        if index - group_start + 1 < group_size:
            continue
        lr = lr_at(step, plan.total_steps, plan.warmup_steps, cfg.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if on_step is not None:  # reading the loss synchronises; only done when someone listens
            on_step({"step": float(step), "lr": lr, "loss": float(loss.detach())})
    mean_loss = float(loss_sum) / max(1, batches)  # synchronises once per epoch
    seconds = time.perf_counter() - started
    return {
        "loss": mean_loss,
        "lr": lr,
        "steps": float(step - first_step),
        "volumes": float(volumes),
        "seconds": seconds,
        "volumes_per_s": volumes / seconds if seconds > 0 else 0.0,
    }


def pretrain_epochs(
    model: MaskedAutoencoder3D,
    loader: SizedLoader,
    cfg: PretrainConfig,
    device: torch.device,
    *,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
    first_epoch: int = 0,
    num_epochs: int | None = None,
    on_step: StepCallback | None = None,
    regulariser: Callable[[], torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """Pre-train ``model`` for some epochs of a ``cfg.epochs``-epoch schedule.

    Args:
        model: the masked autoencoder (moved to ``device``).
        loader: batches with ``image (B, M, X, Y, Z)`` and optionally the validity ``mask``; tokens whose
            patch lies wholly outside the field of view are then left out of the loss. On CUDA the next batch
            is copied while a step computes; give the DataLoader ``pin_memory=True`` for that to overlap.
        cfg: pre-training config.
        device: where to train.
        seed: run seed (derive it from global seed, site and round); masks of epoch ``e`` use
            :func:`endofed.optim.epoch_seed` ``(seed, e)``.
        optimizer: keep one across calls (e.g. federated rounds) to keep its state; default a fresh
            :func:`make_optimizer`.
        first_epoch: index of the first epoch in the schedule (learning rate and mask seeds).
        num_epochs: epochs to run now; default ``cfg.epochs - first_epoch``.
        on_step: optional callback after every optimiser step with ``step`` (optimiser steps done in the
            whole schedule), ``lr`` and ``loss`` (of the step's last micro-batch; reading it synchronises the device).
        regulariser: optional extra term added to the objective of every step (FedProx: the proximal term
            over the encoder); the reported ``loss`` stays the reconstruction loss.

    Returns:
        One dict per epoch: ``epoch``, ``loss``, ``lr``, ``steps``, ``volumes``, ``seconds``, ``volumes_per_s``.

    Raises:
        ValueError: on an empty loader or a bad epoch range.
    """
    batches = len(loader)
    epochs = cfg.epochs - first_epoch if num_epochs is None else num_epochs
    if batches < 1:
        raise ValueError(f"the pre-training loader is empty (len {batches})")
    if first_epoch < 0 or epochs < 1:
        raise ValueError(
            f"need first_epoch >= 0 and at least one epoch, got first_epoch={first_epoch!r}, "
            f"num_epochs={epochs!r} (cfg.epochs={cfg.epochs})"
        )
    model.to(device)
    optimizer = optimizer or make_optimizer(model, cfg, device)
    steps_per_epoch = math.ceil(batches / cfg.accumulation_steps)
    enc = model.encoder
    plan = _Plan(
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=cfg.warmup_epochs * steps_per_epoch,
        visible=num_visible(enc.num_modalities, enc.tokens_per_modality, cfg.mask_ratio),
        device=device,
    )
    forward: Callable[..., torch.Tensor] = model
    if cfg.compile and device.type == "cuda":
        forward = torch.compile(model)
    history = []
    for epoch in range(first_epoch, first_epoch + epochs):
        generator = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
        metrics = _run_epoch(
            model, loader, optimizer, cfg, plan, generator, epoch * steps_per_epoch, forward, on_step, regulariser
        )
        history.append({"epoch": float(epoch), **metrics})
        LOGGER.debug("pre-training epoch %d: %s", epoch, metrics)
    return history
