"""Single-site fine-tuning and patient-level evaluation, from scratch or from a pre-trained encoder.

Evaluation protocol (the same for both arms, so their predictions are paired patient by patient):

1. The labelled usable cases are split by :func:`endofed.training.cohort.load_cohort` into a held-out
   **test** split and a **development** set (``train`` + ``val``). Pre-training excluded the same test split,
   so no image of a test patient has trained any weight of either arm.
2. The development set is cut into ``finetune.folds`` stratified, patient-level folds. For each fold a model
   is initialised identically (same head seed; the same encoder weights: fresh or ``init``), fine-tuned for
   ``finetune.epochs`` on the other folds (fixed schedule, no early stopping, hence no selection on any
   evaluated patient), and predicts its held-out fold and the test split.
3. **Primary result** (``test``): the test patients' probability is the mean over the fold models (an
   ensemble of the models trained on the remaining labelled cases), scored with bootstrap 95% CIs.
   **Secondary** (``dev_cv``): out-of-fold predictions on the development set. Their labels never trained
   the model that predicted them, but a pre-trained encoder has seen their images without labels
   (transductive), so only ``test`` compares the arms without that advantage.

Outputs in ``out_dir``: ``predictions.csv`` (subject ids: site-local), ``results.json``, ``metrics.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from endofed.config import ExperimentConfig, SiteConfig, to_dict
from endofed.data.site import CaseResult
from endofed.data.splits import stratified_folds
from endofed.errors import ConfigError, DataError
from endofed.finetune.augment import AugmentParams
from endofed.finetune.metrics import bootstrap_all
from endofed.finetune.train import finetune_epochs, label_counts, make_finetune_optimizer, predict
from endofed.io.checkpoint import CheckpointError, config_hash, load_checkpoint
from endofed.models.classifier import Classifier3D
from endofed.models.factory import build_classifier, load_encoder
from endofed.training.cohort import (
    SiteCohort,
    case_dataset,
    derive_seed,
    label_of,
    load_cohort,
    make_loader,
    split_digest,
)
from endofed.training.device import resolve_device
from endofed.training.records import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    JsonlWriter,
    Prediction,
    write_predictions,
    write_results,
)
from endofed.training.site_pretrain import ENCODER_FILE, model_seed

LOGGER = logging.getLogger(__name__)
SCRATCH = "scratch"
ENCODER_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
PROTOCOL = (
    "held-out test split (excluded from pre-training); test probability = mean of k fold models trained on the "
    "remaining labelled cases; dev_cv = out-of-fold predictions on those cases (secondary)"
)

EpochCallback = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class Init:
    """How fold models start: fresh (``state`` None) or from a pre-trained encoder checkpoint."""

    name: str
    state: dict[str, torch.Tensor] | None = None
    path: Path | None = None
    sha256: str | None = None


def _check_metadata(meta: Mapping[str, Any], path: Path, cfg: ExperimentConfig, cohort: SiteCohort) -> None:
    """Refuse an encoder pre-trained with another architecture, preprocessing, or on this site's test patients."""
    saved = meta.get("config", {}).get("model") if isinstance(meta.get("config"), dict) else None
    if isinstance(saved, dict):
        current = to_dict(cfg.model)
        diffs = [f"model.{k} {saved.get(k)!r} vs {current[k]!r}" for k in ENCODER_FIELDS if saved.get(k) != current[k]]
        if diffs:
            raise CheckpointError(
                f"encoder checkpoint {path} was pre-trained with another model config (checkpoint vs this config: "
                f"{'; '.join(diffs)}); fine-tune with the config it was pre-trained with"
            )
    digest = meta.get("preprocessing_digest")
    if digest is not None and digest != cohort.passport["preprocessing_digest"]:
        raise CheckpointError(
            f"encoder checkpoint {path} was pre-trained on data preprocessed with another data config "
            f"(preprocessing digest {str(digest)[:12]} vs {cohort.passport['preprocessing_digest'][:12]})"
        )
    held_out = meta.get("test_split_digest")
    if meta.get("site_id") == cohort.site_id and held_out is not None and held_out != split_digest(cohort.test_ids):
        raise CheckpointError(
            f"encoder checkpoint {path} was pre-trained at this site with another held-out test split (other seed, "
            "test_fraction or cases): it may have seen this evaluation's test patients; pre-train again"
        )
    if held_out is None:
        LOGGER.warning("checkpoint %s does not record its held-out test split; cannot check for leakage", path)


def resolve_init(init: str | Path, cfg: ExperimentConfig, cohort: SiteCohort) -> Init:
    """Read and check the initialisation: ``"scratch"`` or an encoder checkpoint (file or its folder).

    Raises:
        CheckpointError: missing/corrupt checkpoint, or one that does not fit this config and site.
    """
    if str(init) == SCRATCH:
        return Init(SCRATCH)
    path = Path(init)
    if path.is_dir():
        path = path / ENCODER_FILE
    tensors, meta = load_checkpoint(path)
    _check_metadata(meta, path, cfg, cohort)
    chosen = Init("pretrained", tensors, path, str(meta["sha256"]))
    fresh_model(cfg, chosen)  # fail now, with a clear message, rather than after a fold of training
    return chosen


def fresh_model(cfg: ExperimentConfig, init: Init) -> Classifier3D:
    """A classifier with the run's fixed initial weights, its encoder replaced by ``init.state`` if any."""
    model = build_classifier(
        cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(model_seed(cfg, "classifier"))
    )
    if init.state is not None:
        try:
            load_encoder(model, init.state)
        except RuntimeError as exc:
            detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
            raise CheckpointError(f"encoder checkpoint {init.path} does not fit this model: {detail}") from None
    return model


def _fold_predictions(
    site: SiteConfig,
    cfg: ExperimentConfig,
    init: Init,
    fold: int,
    train: Sequence[CaseResult],
    held: Sequence[CaseResult],
    test: Sequence[CaseResult],
    writer: JsonlWriter,
    on_epoch: EpochCallback | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune one fold model; return its probabilities on the held-out fold and on the test split."""
    device = resolve_device(site.device)
    ft = cfg.finetune
    model = fresh_model(cfg, init)
    loader = make_loader(case_dataset(site, train), ft.batch_size, device, derive_seed(cfg.seed, site.site_id, fold))
    counts = label_counts([label_of(r) for r in train], cfg.model.num_classes)

    def record(metrics: dict[str, float]) -> None:
        writer.write({"fold": fold, **metrics})
        if on_epoch is not None:
            on_epoch({"fold": float(fold), **metrics})

    optimizer = make_finetune_optimizer(model.to(device), ft, device)
    for epoch in range(ft.epochs):
        (metrics,) = finetune_epochs(
            model,
            loader,
            ft,
            device,
            seed=derive_seed(cfg.seed, site.site_id, "augment", fold),
            class_counts=counts,
            augment=AugmentParams(spacing=cfg.data.target_spacing),
            optimizer=optimizer,
            first_epoch=epoch,
            num_epochs=1,
        )
        record(metrics)
    held_probs = predict(model, make_loader(case_dataset(site, held), ft.batch_size, device), device)
    return held_probs, predict(model, make_loader(case_dataset(site, test), ft.batch_size, device), device)


def _metric_table(labels: Sequence[int], probs: np.ndarray, cfg: ExperimentConfig) -> dict[str, dict[str, float]]:
    """Every metric with its bootstrap 95% CI, as ``{name: {value, low, high}}``."""
    intervals = bootstrap_all(np.asarray(labels), probs, cfg.finetune.bootstrap, cfg.seed)
    return {name: {"value": v, "low": lo, "high": hi} for name, (v, lo, hi) in intervals.items()}


def _development_folds(cohort: SiteCohort, cfg: ExperimentConfig) -> tuple[list[CaseResult], list[list[str]]]:
    """Labelled development cases and the held-out subject ids of each stratified fold."""
    dev = cohort.select(("train", "val"), labelled_only=True)
    labels = {r.case.subject_id: label_of(r) for r in dev}
    folds = stratified_folds(labels, cfg.finetune.folds, cfg.seed)
    return dev, [held for _, held in folds]


def _check_task(cfg: ExperimentConfig, cohort: SiteCohort, test: Sequence[CaseResult]) -> None:
    """Refuse a non-binary head or an empty test split."""
    if cfg.model.num_classes != 2:
        raise ConfigError(f"endometriosis labels are binary: model.num_classes must be 2, got {cfg.model.num_classes}")
    if not test:
        raise DataError(
            f"site {cohort.site_id!r} has no labelled test patient (finetune.test_fraction="
            f"{cfg.finetune.test_fraction}, no 'test' split in the manifest): nothing to evaluate on",
            "too_few_cases",
        )


def finetune_site(
    site: SiteConfig,
    cfg: ExperimentConfig,
    init: str | Path,
    out_dir: Path,
    on_epoch: EpochCallback | None = None,
    allow_failures: bool = False,
) -> dict[str, Any]:
    """Fine-tune and evaluate one arm (scratch or pre-trained) with the protocol of this module.

    Args:
        site: the site.
        cfg: experiment config (the same for both arms).
        init: ``"scratch"``, or an ``encoder.safetensors`` (or the folder holding it) from pre-training.
        out_dir: output folder (created).
        on_epoch: called after each epoch of each fold with its metrics and ``fold``.
        allow_failures: use the usable cases even if some cases failed the data check.

    Returns:
        The results written to ``results.json``: ``test`` and ``dev_cv`` metrics with 95% CIs, case counts,
        ``init``, ``config_hash`` and the protocol.

    Raises:
        DataError: site not ready, no test patient, or too few cases per class for the folds.
        CheckpointError: ``init`` is missing, corrupt, or does not fit this config or site.
    """
    cohort = load_cohort(site, cfg, allow_failures)
    test = cohort.select(("test",), labelled_only=True)
    _check_task(cfg, cohort, test)
    chosen = resolve_init(init, cfg, cohort)
    dev, folds = _development_folds(cohort, cfg)
    by_id = {r.case.subject_id: r for r in dev}
    out_dir = Path(out_dir)
    writer = JsonlWriter(out_dir / METRICS_FILE)
    rows: list[Prediction] = []
    test_probs = []
    for fold, held_ids in enumerate(folds):
        held = [by_id[s] for s in held_ids]
        train = [by_id[s] for s in sorted(set(by_id) - set(held_ids))]
        held_probs, fold_test = _fold_predictions(site, cfg, chosen, fold, train, held, test, writer, on_epoch)
        rows += [
            Prediction(r.case.subject_id, "dev", str(fold), label_of(r), float(p))
            for r, p in zip(held, held_probs, strict=True)
        ]
        test_probs.append(fold_test)
    ensemble = np.mean(np.stack(test_probs), axis=0)
    rows = [
        Prediction(r.case.subject_id, "test", "ensemble", label_of(r), float(p))
        for r, p in zip(test, ensemble, strict=True)
    ] + rows
    write_predictions(out_dir / PREDICTIONS_FILE, rows)
    results = _summary(cfg, cohort, chosen, rows)
    write_results(out_dir / RESULTS_FILE, results)
    return results


def _summary(cfg: ExperimentConfig, cohort: SiteCohort, init: Init, rows: Sequence[Prediction]) -> dict[str, Any]:
    """The ``results.json`` content of one arm."""
    cfg_dict = to_dict(cfg)
    result: dict[str, Any] = {
        "site_id": cohort.site_id,
        "init": init.name,
        "init_checkpoint": None if init.path is None else str(init.path),
        "init_sha256": init.sha256,
        "config_hash": config_hash(cfg_dict),
        "seed": cfg.seed,
        "bootstrap": cfg.finetune.bootstrap,
        "folds": cfg.finetune.folds,
        "epochs": cfg.finetune.epochs,
        "protocol": PROTOCOL,
        "test_split_digest": split_digest(cohort.test_ids),
    }
    for split, key in (("test", "test"), ("dev", "dev_cv")):
        chosen = [r for r in rows if r.split == split]
        labels = [r.label for r in chosen]
        result[f"n_{key}"] = len(chosen)
        result[f"n_{key}_positive"] = sum(labels)
        result[key] = _metric_table(labels, np.array([r.prob for r in chosen]), cfg)
    return result
