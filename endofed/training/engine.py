"""The one site-run engine: seeded model -> loader -> optimiser -> epochs, for MIM pre-training and fine-tuning.

Every training path calls :func:`run_stage`: single-site pre-training (``endofed pretrain``) and fine-tuning
(``endofed finetune``), the two phases of a federated site (one call per round), and ``endofed compare``'s local
and pooled arms. So a change to the recipe (loader, optimiser, schedule, augmentation, seeds) is one change, and
the same cases with the same seeds train the same model whichever command runs them.

Seeds (ARCHITECTURE.md §5.7) derive from the run seed and the stage's ``tag`` (a site id, or an arm and its
sites): shuffling from ``(tag, <phase>[, round])``, masks from ``(tag, "masks")``, augmentation and stochastic
depth from ``(tag, "augment")``. The epochs within the learning-rate schedule (``first_epoch``) seed each epoch's
masks and augmentation, so an epoch is reproducible whether it runs alone (a federated round) or in a sequence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from endofed.config import ExperimentConfig
from endofed.data.loaders import SiteCases, make_loader, parts_dataset
from endofed.federated.protocol import FINETUNE, PHASES, PRETRAIN
from endofed.finetune.augment import AugmentParams
from endofed.finetune.train import finetune_epochs, label_counts, make_finetune_optimizer, predict
from endofed.io.optim import restore_optimizer
from endofed.models.classifier import Classifier3D
from endofed.models.factory import build_classifier, build_mae, load_encoder
from endofed.models.mae import MaskedAutoencoder3D
from endofed.seeds import derive_seed
from endofed.ssl.pretrain import make_optimizer, pretrain_epochs

MetricsCallback = Callable[[dict[str, float]], None]
LOOP_SEED_NAME = {PRETRAIN: "masks", FINETUNE: "augment"}  # what the per-epoch generator draws


def model_seed(cfg: ExperimentConfig, purpose: str) -> int:
    """Seed of a model's initial weights, the same at every site (``purpose``: ``mae`` or ``classifier``)."""
    return derive_seed(cfg.seed, "init", purpose)


def new_mae(cfg: ExperimentConfig, seed: int) -> MaskedAutoencoder3D:
    """A masked autoencoder with the initial weights of ``seed``."""
    return build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(seed))


def new_classifier(cfg: ExperimentConfig, seed: int, encoder: Mapping[str, torch.Tensor] | None = None) -> Classifier3D:
    """A classifier with the initial weights of ``seed``, its encoder replaced by ``encoder`` (strict) if given."""
    model = build_classifier(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(seed))
    if encoder is not None:
        load_encoder(model, encoder)
    return model


@dataclass(frozen=True)
class Stage:
    """What one call of :func:`run_stage` trains on, and where it stands in its learning-rate schedule.

    Attributes:
        phase: ``pretrain`` (MIM, every given case) or ``finetune`` (supervised, labelled cases only).
        parts: the cases, per site (one part: a site's own data; several: pooled).
        tag: names the run in its seeds (a site id, or e.g. ``"pooled/a+b+c"``).
        schedule_epochs: epochs the learning-rate schedule spans (federated: rounds x local epochs).
        first_epoch: index of this call's first epoch in that schedule.
        num_epochs: epochs to run now (default: the rest of the schedule).
        server_round: federated round (``None`` outside a federation); a round reshuffles the loader.
    """

    phase: str
    parts: Sequence[SiteCases]
    tag: str
    schedule_epochs: int
    first_epoch: int = 0
    num_epochs: int | None = None
    server_round: int | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        epochs = self.epochs
        if self.first_epoch < 0 or epochs < 1 or self.first_epoch + epochs > self.schedule_epochs:
            raise ValueError(
                f"epochs {self.first_epoch}..{self.first_epoch + epochs - 1} do not fit a schedule of "
                f"{self.schedule_epochs} epochs"
            )

    @property
    def epochs(self) -> int:
        """Epochs this call runs."""
        return self.schedule_epochs - self.first_epoch if self.num_epochs is None else self.num_epochs

    @property
    def volumes(self) -> int:
        """Training volumes (the FedAvg weight ``num-examples``)."""
        return sum(len(p.cases) for p in self.parts)

    def loader_seed(self, seed: int) -> int:
        """Seed of the loader's shuffling."""
        extra = () if self.server_round is None else (self.server_round,)
        return derive_seed(seed, self.tag, self.phase, *extra)

    def loop_seed(self, seed: int) -> int:
        """Seed of the per-epoch mask (pre-training) or augmentation (fine-tuning) generators."""
        return derive_seed(seed, self.tag, LOOP_SEED_NAME[self.phase])


@dataclass
class StageResult:
    """The trained model (in place), its optimiser (for saving its state) and one metrics dict per epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: list[dict[str, float]]


OptimizerState = tuple[dict[str, torch.Tensor], dict[str, Any]]  # see endofed.io.optim.optimizer_tensors


def augment_params(cfg: ExperimentConfig) -> AugmentParams:
    """Fine-tuning augmentation of an experiment: its flips and rotation range, at the target voxel spacing."""
    return AugmentParams(
        flip_axes=cfg.finetune.flip_axes,
        max_rotation_deg=cfg.finetune.max_rotation_deg,
        spacing=cfg.data.target_spacing,
    )


def _optimizer(model: nn.Module, stage: Stage, cfg: ExperimentConfig, device: torch.device) -> torch.optim.Optimizer:
    """The phase's AdamW over a schedule of ``stage.schedule_epochs``."""
    if isinstance(model, MaskedAutoencoder3D):
        return make_optimizer(model.to(device), dataclasses.replace(cfg.pretrain, epochs=stage.schedule_epochs), device)
    assert isinstance(model, Classifier3D)  # checked by run_stage
    return make_finetune_optimizer(
        model.to(device), dataclasses.replace(cfg.finetune, epochs=stage.schedule_epochs), device
    )


def planned_steps(stage: Stage, cfg: ExperimentConfig) -> int:
    """Optimiser steps :func:`run_stage` will take (for a progress bar)."""
    batch = cfg.pretrain.batch_size if stage.phase == PRETRAIN else cfg.finetune.batch_size
    batches = math.ceil(stage.volumes / batch)
    per_epoch = math.ceil(batches / cfg.pretrain.accumulation_steps) if stage.phase == PRETRAIN else batches
    return stage.epochs * per_epoch


def run_stage(
    model: nn.Module,
    stage: Stage,
    cfg: ExperimentConfig,
    device: torch.device,
    *,
    optimizer_state: OptimizerState | None = None,
    regulariser: Callable[[], torch.Tensor] | None = None,
    on_epoch: MetricsCallback | None = None,
    on_step: MetricsCallback | None = None,
) -> StageResult:
    """Train ``model`` (an MAE for ``pretrain``, a classifier for ``finetune``) for the stage's epochs.

    Args:
        model: the model, already initialised (fresh, loaded, or received).
        stage: cases, seeds and schedule position.
        cfg: the experiment config (``pretrain`` / ``finetune`` recipe, ``data.target_spacing`` for augmentation).
        device: where to train.
        optimizer_state: the optimiser state saved by the previous call (a federated site's earlier round).
        regulariser: added to every step's objective (FedProx's proximal term), not to the reported loss.
        on_epoch: called with each epoch's metrics.
        on_step: called after every optimiser step with ``step``, ``lr`` and ``loss``.

    Returns:
        The model, its optimiser and the epochs' metrics.
    """
    expected = MaskedAutoencoder3D if stage.phase == PRETRAIN else Classifier3D
    if not isinstance(model, expected):
        raise TypeError(f"stage {stage.phase!r} trains a {expected.__name__}, got {type(model).__name__}")
    dataset = parts_dataset(stage.parts)
    batch = cfg.pretrain.batch_size if stage.phase == PRETRAIN else cfg.finetune.batch_size
    loader = make_loader(dataset, batch, device, stage.loader_seed(cfg.seed))
    optimizer = _optimizer(model, stage, cfg, device)
    if optimizer_state is not None:
        restore_optimizer(optimizer, *optimizer_state)
    counts = None
    if stage.phase == FINETUNE:
        counts = label_counts([y for p in stage.parts for y in p.labels], cfg.model.num_classes)
    history: list[dict[str, float]] = []
    for epoch in range(stage.first_epoch, stage.first_epoch + stage.epochs):
        if isinstance(model, MaskedAutoencoder3D):
            (metrics,) = pretrain_epochs(
                model, loader, dataclasses.replace(cfg.pretrain, epochs=stage.schedule_epochs), device,
                seed=stage.loop_seed(cfg.seed), optimizer=optimizer, first_epoch=epoch, num_epochs=1,
                on_step=on_step, regulariser=regulariser,
            )  # fmt: skip
        else:
            (metrics,) = finetune_epochs(
                model, loader, dataclasses.replace(cfg.finetune, epochs=stage.schedule_epochs), device,
                seed=stage.loop_seed(cfg.seed), class_counts=counts,
                augment=augment_params(cfg), optimizer=optimizer, first_epoch=epoch,
                num_epochs=1, on_step=on_step, regulariser=regulariser,
            )  # fmt: skip
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return StageResult(model, optimizer, history)


def predict_cases(model: Classifier3D, part: SiteCases, batch_size: int, device: torch.device) -> np.ndarray:
    """Probability of endometriosis for each case of ``part``, in its order (eval mode, no augmentation).

    Raises:
        ValueError: if a prediction is missing or not finite.
    """
    probs = predict(model.to(device), make_loader(parts_dataset([part]), batch_size, device), device)
    if probs.shape != (len(part.cases),) or not np.isfinite(probs).all():
        raise ValueError(f"prediction failed for site {part.site.site_id!r}: {probs.shape} for {len(part.cases)} cases")
    return probs
