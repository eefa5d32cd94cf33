"""Centralised training for the non-federated arms: one site's data (single-site arms) or several (pooled).

Every function takes the cases to train on explicitly, so the caller decides, and records, which subjects
trained which model; the held-out test patients are never among them (see :mod:`endofed.compare.runner`).
Fine-tuning here trains one model on all the given labelled cases for ``finetune.epochs`` (no folds, no
early stopping): the same protocol as federated fine-tuning, where every site trains on all its labelled
development cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from endofed.config import ExperimentConfig, SiteConfig
from endofed.data.site import CaseResult
from endofed.finetune.augment import AugmentParams
from endofed.finetune.train import finetune_epochs, label_counts, make_finetune_optimizer, predict
from endofed.io.checkpoint import module_state
from endofed.models.classifier import Classifier3D
from endofed.models.factory import build_classifier, build_mae, load_encoder
from endofed.ssl.pretrain import make_optimizer, pretrain_epochs
from endofed.training.cohort import case_dataset, derive_seed, label_of
from endofed.training.site_pretrain import model_seed, write_pretrain_preview

EpochCallback = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class SiteCases:
    """Some cases of one site (the site is needed to find their cache)."""

    site: SiteConfig
    cases: list[CaseResult]

    @property
    def subject_ids(self) -> list[str]:
        """The cases' subject ids (site-local), sorted."""
        return sorted(r.case.subject_id for r in self.cases)


def subsample_labelled(cases: Sequence[CaseResult], fraction: float, seed: int) -> list[CaseResult]:
    """A stratified share of labelled cases: per class ``max(1, round(fraction * n_class))``, seeded.

    Args:
        cases: labelled cases.
        fraction: share to keep, in (0, 1].
        seed: seed of the draw (the same seed keeps the same cases).

    Returns:
        The kept cases, sorted by subject id.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    kept: list[CaseResult] = []
    for label in sorted({label_of(r) for r in cases}):
        group = sorted((r for r in cases if label_of(r) == label), key=lambda r: r.case.subject_id)
        count = max(1, round(fraction * len(group)))
        kept += [group[i] for i in sorted(rng.choice(len(group), size=count, replace=False))]
    return sorted(kept, key=lambda r: r.case.subject_id)


def _dataset(parts: Sequence[SiteCases]) -> Dataset[dict[str, torch.Tensor]]:
    """The cached volumes of every part, one site after another."""
    datasets = [case_dataset(p.site, p.cases) for p in parts if p.cases]
    if not datasets:
        raise ValueError("no case to train on")
    return datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)


def _loader(
    dataset: Dataset[dict[str, torch.Tensor]], batch_size: int, device: torch.device, seed: int | None
) -> DataLoader[dict[str, torch.Tensor]]:
    """A loader over ``dataset``, shuffled by ``seed`` (None: in order)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=seed is not None, generator=generator, pin_memory=device.type == "cuda"
    )


def pretrain_encoder(
    cfg: ExperimentConfig,
    parts: Sequence[SiteCases],
    device: torch.device,
    tag: str,
    preview: Path | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """MIM pre-training on the given cases for ``cfg.pretrain.epochs``; returns the encoder state and history.

    Args:
        cfg: experiment config.
        parts: cases per site (one part: a single-site arm; several: pooled).
        device: where to train.
        tag: names the run in the derived seeds (shuffling, masks), e.g. the arm and site.
        preview: if given, a reconstruction preview PNG of the first training cases is written there.
        on_epoch: called with each epoch's metrics.
    """
    dataset = _dataset(parts)
    loader = _loader(dataset, cfg.pretrain.batch_size, device, derive_seed(cfg.seed, tag, "pretrain"))
    model = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(model_seed(cfg, "mae")))
    optimizer = make_optimizer(model.to(device), cfg.pretrain, device)
    history = []
    for epoch in range(cfg.pretrain.epochs):
        (metrics,) = pretrain_epochs(
            model, loader, cfg.pretrain, device, seed=derive_seed(cfg.seed, tag, "masks"), optimizer=optimizer,
            first_epoch=epoch, num_epochs=1,
        )  # fmt: skip
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    if preview is not None:
        write_pretrain_preview(model, dataset, cfg, device, preview)
    return module_state(model, "encoder"), history


def finetune_classifier(
    cfg: ExperimentConfig,
    encoder: Mapping[str, torch.Tensor] | None,
    parts: Sequence[SiteCases],
    device: torch.device,
    tag: str,
    on_epoch: EpochCallback | None = None,
) -> tuple[Classifier3D, list[dict[str, float]]]:
    """Fine-tune one classifier on all given labelled cases (from ``encoder``, or from scratch if None)."""
    model = build_classifier(
        cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(model_seed(cfg, "classifier"))
    )
    if encoder is not None:
        load_encoder(model, encoder)
    loader = _loader(_dataset(parts), cfg.finetune.batch_size, device, derive_seed(cfg.seed, tag, "finetune"))
    counts = label_counts([label_of(r) for p in parts for r in p.cases], cfg.model.num_classes)
    optimizer = make_finetune_optimizer(model.to(device), cfg.finetune, device)
    history = []
    for epoch in range(cfg.finetune.epochs):
        (metrics,) = finetune_epochs(
            model, loader, cfg.finetune, device, seed=derive_seed(cfg.seed, tag, "augment"), class_counts=counts,
            augment=AugmentParams(spacing=cfg.data.target_spacing), optimizer=optimizer, first_epoch=epoch,
            num_epochs=1,
        )  # fmt: skip
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return model, history


def predict_cases(model: Classifier3D, part: SiteCases, batch_size: int, device: torch.device) -> np.ndarray:
    """Probability of endometriosis for each case of ``part``, in its order."""
    probs = predict(model, _loader(_dataset([part]), batch_size, device, None), device)
    if probs.shape != (len(part.cases),) or not np.isfinite(probs).all():
        raise ValueError(f"prediction failed for site {part.site.site_id!r}: {probs.shape} for {len(part.cases)} cases")
    return probs
