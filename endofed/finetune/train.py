"""The supervised fine-tuning loop of the classifier at one site (returns metrics, prints nothing).

Same code path whatever the encoder's initialisation (from scratch or pre-trained): AdamW over layer-wise
learning-rate-decay groups (:func:`layer_decay_groups`, as in MAE/BEiT fine-tuning), the warm-up + cosine
schedule of :func:`endofed.optim.lr_at` over ``FinetuneConfig.epochs``, cross-entropy weighted by
inverse class frequency (:func:`class_weights`), and :mod:`endofed.finetune.augment` on the device. Cases
with a missing modality are classified from the other one (``modality_present``).

On CUDA: bf16 autocast (master weights fp32), fused AdamW. On CPU: fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from endofed.config import FinetuneConfig
from endofed.eager import EagerAdamW
from endofed.errors import DataError
from endofed.finetune.augment import AugmentParams, random_augment
from endofed.models.classifier import Classifier3D, modality_presence
from endofed.optim import decays, epoch_seed, lr_at
from endofed.ssl.prefetch import device_batches

LOGGER = logging.getLogger(__name__)
DROP_PATH_SALT = 0x5EED_D809  # separates the stochastic-depth stream from the augmentation stream
ADAMW_BETAS = (0.9, 0.999)  # MAE's fine-tuning choice
FINETUNE_KEYS = ("image", "mask", "label")

StepCallback = Callable[[dict[str, float]], None]


class LabelledLoader(Protocol):
    """What the loop needs from a data loader: ``len`` and batches with ``image``, ``mask`` and ``label``."""

    def __len__(self) -> int:
        """Number of batches per epoch."""

    def __iter__(self) -> Iterator[Mapping[str, torch.Tensor]]:
        """Yield ``image (B, M, X, Y, Z)``, ``mask`` (same shape, bool) and ``label (B,)`` int64."""


def layer_id(name: str, depth: int) -> int:
    """Depth of a classifier parameter for layer-wise decay.

    ``0`` for the patch and modality embeddings, ``i + 1`` for ``encoder.blocks.i``, ``depth + 1`` for the
    rest (final encoder norm, head norm, head), as in MAE's ``param_groups_lrd``.
    """
    if name.startswith("encoder.patch_embed.") or name == "encoder.modality_embed":
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def layer_decay_groups(
    classifier: Classifier3D, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay.

    Parameter of layer ``l`` (see :func:`layer_id`) gets ``lr * layer_decay ** (depth + 1 - l)``: the head
    ``lr``, the last block ``lr * decay``, ..., the embeddings ``lr * decay ** (depth + 1)``. Biases, norms
    and the modality embedding are not decayed (the patch-embedding projections are, like any matrix).

    Args:
        classifier: the model (its ``encoder.blocks`` give ``depth``).
        lr: peak learning rate of the head.
        weight_decay: AdamW decay of the decayed groups.
        layer_decay: factor in (0, 1] (1 = off).

    Returns:
        Non-empty groups ordered by layer, each with ``params``, ``names``, ``layer``, ``lr_scale``, ``lr``
        and ``weight_decay``.

    Raises:
        ValueError: on a non-positive ``lr``, negative ``weight_decay`` or ``layer_decay`` outside (0, 1].
    """
    if lr <= 0 or weight_decay < 0 or not 0 < layer_decay <= 1:
        raise ValueError(
            f"need lr > 0, weight_decay >= 0 and 0 < layer_decay <= 1, got lr={lr!r}, "
            f"weight_decay={weight_decay!r}, layer_decay={layer_decay!r}"
        )
    depth = len(classifier.encoder.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in classifier.named_parameters():
        if not param.requires_grad:
            continue
        layer, decayed = layer_id(name, depth), decays(name, param)
        scale = layer_decay ** (depth + 1 - layer)
        group = groups.setdefault(
            (layer, decayed),
            {
                "params": [],
                "names": [],
                "layer": layer,
                "lr_scale": scale,
                "lr": lr * scale,
                "weight_decay": weight_decay if decayed else 0.0,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def label_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    """Cases per class ``0 .. num_classes - 1``; ``ValueError`` on a label outside that range."""
    bad = [y for y in labels if not 0 <= int(y) < num_classes]
    if bad:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {bad[0]!r}")
    return [sum(1 for y in labels if int(y) == c) for c in range(num_classes)]


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency loss weights ``w_c = N / (C * n_c)`` (scikit-learn's "balanced").

    A balanced set gets weights 1; counts (3, 1) give (2/3, 2). The weighted loss treats both classes as
    equally frequent.

    Args:
        counts: cases per class.

    Returns:
        ``(C,)`` float32 weights.

    Raises:
        ValueError: if fewer than two classes are given or a class has no case.
    """
    if len(counts) < 2 or min(counts) <= 0:
        raise ValueError(f"class weights need at least one case of each of >= 2 classes, got counts {list(counts)}")
    total = float(sum(counts))
    return torch.tensor([total / (len(counts) * n) for n in counts], dtype=torch.float32)


def make_finetune_optimizer(model: Classifier3D, cfg: FinetuneConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`layer_decay_groups`, fused on CUDA."""
    groups = layer_decay_groups(model, cfg.lr, cfg.weight_decay, cfg.layer_decay)
    return EagerAdamW(groups, lr=cfg.lr, betas=ADAMW_BETAS, fused=device.type == "cuda")


def _presence(mask: torch.Tensor) -> torch.Tensor | None:
    """``(B, M)`` modality presence, or ``None`` when every case has every modality (fast attention)."""
    present = modality_presence(mask)
    return None if bool(present.all()) else present


@dataclass(frozen=True)
class _Plan:
    """Per-call constants of the loop."""

    total_steps: int
    warmup_steps: int
    peak_lr: float
    device: torch.device
    weight: torch.Tensor | None
    augment: AugmentParams | None
    regulariser: Callable[[], torch.Tensor] | None = None


def _step(
    model: Classifier3D,
    batch: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    plan: _Plan,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch; returns the detached loss and the number of correct predictions."""
    image, mask, label = batch["image"], batch["mask"], batch["label"]
    if plan.augment is not None:
        image, mask = random_augment(image, mask, plan.augment, generator)
    present = _presence(mask)
    with torch.autocast(plan.device.type, dtype=torch.bfloat16, enabled=plan.device.type == "cuda"):
        logits = model(image, present)  # (B, num_classes)
    loss = F.cross_entropy(logits.float(), label, weight=plan.weight)
    objective = loss if plan.regulariser is None else loss + plan.regulariser()
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == label).sum()


def _run_epoch(
    model: Classifier3D,
    loader: LabelledLoader,
    optimizer: torch.optim.Optimizer,
    plan: _Plan,
    generator: torch.Generator,
    first_step: int,
    on_step: StepCallback | None,
) -> dict[str, float]:
    """One pass over ``loader``; returns ``loss``, ``accuracy``, ``lr``, ``steps``, ``volumes``, ``seconds``."""
    model.train()
    loss_sum = torch.zeros((), device=plan.device)
    correct = torch.zeros((), device=plan.device, dtype=torch.int64)
    volumes, step, lr = 0, first_step, 0.0
    started = time.perf_counter()
    for batch in device_batches(loader, plan.device, FINETUNE_KEYS):
        lr = lr_at(step, plan.total_steps, plan.warmup_steps, plan.peak_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss, right = _step(model, batch, optimizer, plan, generator)
        loss_sum += loss
        correct += right
        volumes += int(batch["label"].shape[0])
        step += 1
        if on_step is not None:
            on_step({"step": float(step), "lr": lr, "loss": float(loss)})
    return {
        "loss": float(loss_sum) / max(1, step - first_step),
        "accuracy": float(correct) / max(1, volumes),
        "lr": lr,
        "steps": float(step - first_step),
        "volumes": float(volumes),
        "seconds": time.perf_counter() - started,
    }


def finetune_epochs(
    model: Classifier3D,
    loader: LabelledLoader,
    cfg: FinetuneConfig,
    device: torch.device,
    *,
    seed: int,
    class_counts: Sequence[int] | None = None,
    augment: AugmentParams | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    first_epoch: int = 0,
    num_epochs: int | None = None,
    on_step: StepCallback | None = None,
    regulariser: Callable[[], torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """Fine-tune ``model`` for some epochs of a ``cfg.epochs``-epoch schedule.

    Args:
        model: the classifier (moved to ``device``), from scratch or with a loaded encoder.
        loader: labelled batches (labels in ``0 .. num_classes - 1``).
        cfg: fine-tuning config (``lr``, ``weight_decay``, ``warmup_epochs``, ``layer_decay``,
            ``class_weighted``, ``augment``).
        device: where to train.
        seed: run seed; augmentation of epoch ``e`` draws from a generator seeded by ``epoch_seed(seed, e)``.
        class_counts: training cases per class; required when ``cfg.class_weighted``.
        augment: augmentation ranges when ``cfg.augment`` (default :class:`AugmentParams`).
        optimizer: keep one across calls to keep its state; default :func:`make_finetune_optimizer`.
        first_epoch: index of the first epoch in the schedule.
        num_epochs: epochs to run now; default ``cfg.epochs - first_epoch``.
        on_step: optional callback after every step with ``step``, ``lr`` (of the head) and ``loss``.
        regulariser: optional extra term added to every step's objective (FedProx: the proximal term over
            the encoder); the reported ``loss`` stays the cross-entropy.

    Returns:
        One dict per epoch: ``epoch``, ``loss``, ``accuracy`` (training, augmented), ``lr`` (of the head at the
        last step; layer ``l`` gets it times its ``lr_scale``), ``steps``, ``volumes``, ``seconds``.

    Raises:
        ValueError: on an empty loader, a bad epoch range, or ``class_weighted`` without ``class_counts``.
        DataError: ``class_weighted`` with a class that has no training case (the site's data cannot support it).
    """
    batches = len(loader)
    epochs = cfg.epochs - first_epoch if num_epochs is None else num_epochs
    if batches < 1 or first_epoch < 0 or epochs < 1:
        raise ValueError(
            f"need a non-empty loader and at least one epoch, got {batches} batches, first_epoch={first_epoch!r}, "
            f"num_epochs={epochs!r} (cfg.epochs={cfg.epochs})"
        )
    if cfg.class_weighted and class_counts is None:
        raise ValueError("finetune.class_weighted is true: pass class_counts (training cases per class)")
    if cfg.class_weighted and class_counts is not None and (len(class_counts) < 2 or min(class_counts) <= 0):
        raise DataError(f"the labelled training cases hold fewer than two classes (cases per class "
                        f"{list(class_counts)}): class-weighted fine-tuning needs both", "one_class")  # fmt: skip
    model.to(device)
    optimizer = optimizer or make_finetune_optimizer(model, cfg, device)
    weight = class_weights(class_counts).to(device) if cfg.class_weighted and class_counts is not None else None
    plan = _Plan(
        total_steps=cfg.epochs * batches,
        warmup_steps=cfg.warmup_epochs * batches,
        peak_lr=cfg.lr,
        device=device,
        weight=weight,
        augment=(augment or AugmentParams()) if cfg.augment else None,
        regulariser=regulariser,
    )
    history = []
    for epoch in range(first_epoch, first_epoch + epochs):
        generator = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
        # Stochastic depth draws from the global RNG: seed it per epoch, inside a fork so the caller's stays put.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(epoch_seed(seed, epoch) ^ DROP_PATH_SALT)
            metrics = _run_epoch(model, loader, optimizer, plan, generator, epoch * batches, on_step)
        history.append({"epoch": float(epoch), **metrics})
        LOGGER.debug("fine-tuning epoch %d: %s", epoch, metrics)
    return history


@torch.no_grad()
def predict(model: Classifier3D, loader: LabelledLoader, device: torch.device) -> np.ndarray:
    """Probability of class 1 for every case of ``loader``, in loader order (eval mode, no augmentation).

    Args:
        model: the classifier.
        loader: batches with ``image`` and ``mask`` (labels are not used).
        device: where to run.

    Returns:
        ``(N,)`` float64 probabilities in [0, 1].
    """
    model.to(device)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for batch in device_batches(loader, device, FINETUNE_KEYS):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(batch["image"], _presence(batch["mask"]))
            out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy().astype(np.float64))
    finally:
        model.train(was_training)
    probs = np.concatenate(out) if out else np.zeros(0, dtype=np.float64)
    return np.clip(probs, 0.0, 1.0)
