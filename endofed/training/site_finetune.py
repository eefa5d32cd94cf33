"""Single-site fine-tuning and patient-level evaluation, from scratch or from a pre-trained encoder.

The evaluation protocol of every endofed result (``endofed finetune``, ``endofed compare``'s arms and the
federated fine-tuning): the labelled usable cases are split by :func:`endofed.training.cohort.load_cohort` into a
held-out **test** split and the **development** cases. One classifier is initialised (the same head seed; the
encoder fresh or from ``init``), fine-tuned on all development cases for ``finetune.epochs`` (a fixed schedule,
no early stopping, hence no selection on any evaluated patient) and predicts the test patients, which are
scored with bootstrap 95% CIs. Pre-training excluded the same test split, so no image of a test patient has
trained any weight of any arm, and two arms' predictions are paired patient by patient.

Outputs in ``out_dir``: ``predictions.csv`` (subject ids: site-local), ``results.json``, ``metrics.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from endofed.config import ExperimentConfig, SiteConfig, to_dict
from endofed.data.loaders import SiteCases
from endofed.data.site import CaseResult
from endofed.errors import ConfigError, DataError
from endofed.federated.protocol import FINETUNE
from endofed.finetune.metrics import bootstrap_all
from endofed.io.checkpoint import CheckpointError, config_hash, load_checkpoint
from endofed.models.classifier import Classifier3D
from endofed.training.cohort import SiteCohort, load_cohort, split_digest
from endofed.training.device import resolve_device
from endofed.training.engine import MetricsCallback, Stage, model_seed, new_classifier, predict_cases, run_stage
from endofed.training.records import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    Prediction,
    metrics_recorder,
    write_predictions,
    write_results,
)
from endofed.training.site_pretrain import ENCODER_FILE

LOGGER = logging.getLogger(__name__)
SCRATCH = "scratch"
ENCODER_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
PROTOCOL = (
    "held-out test split (excluded from pre-training); one classifier fine-tuned on all labelled development "
    "cases for finetune.epochs (fixed schedule, no selection), tested once"
)


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
    try:
        return new_classifier(cfg, model_seed(cfg, "classifier"), init.state)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise CheckpointError(f"encoder checkpoint {init.path} does not fit this model: {detail}") from None


def _metric_table(labels: Sequence[int], probs: np.ndarray, cfg: ExperimentConfig) -> dict[str, dict[str, float]]:
    """Every metric with its bootstrap 95% CI, as ``{name: {value, low, high}}``."""
    intervals = bootstrap_all(np.asarray(labels), probs, cfg.finetune.bootstrap, cfg.seed)
    return {name: {"value": v, "low": lo, "high": hi} for name, (v, lo, hi) in intervals.items()}


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
    on_epoch: MetricsCallback | None = None,
    allow_failures: bool = False,
) -> dict[str, Any]:
    """Fine-tune and evaluate one arm (scratch or pre-trained) with the protocol of this module.

    Both arms of a site share the shuffling, augmentation and head seeds (derived from the site id), so only the
    encoder's initialisation differs between them.

    Args:
        site: the site.
        cfg: experiment config (the same for both arms).
        init: ``"scratch"``, or an ``encoder.safetensors`` (or the folder holding it) from pre-training.
        out_dir: output folder (created).
        on_epoch: called after each epoch with its metrics.
        allow_failures: use the usable cases even if some cases failed the data check.

    Returns:
        The results written to ``results.json``: ``test`` metrics with 95% CIs, case counts, ``init``,
        ``config_hash`` and the protocol.

    Raises:
        DataError: site not ready, or no labelled test or development patient.
        CheckpointError: ``init`` is missing, corrupt, or does not fit this config or site.
    """
    cohort = load_cohort(site, cfg, allow_failures)
    test = cohort.test_cases()
    _check_task(cfg, cohort, test)
    chosen = resolve_init(init, cfg, cohort)
    dev = cohort.dev_cases()
    if not dev:
        raise DataError(f"site {site.site_id!r} has no labelled development case to fine-tune on", "too_few_cases")
    out_dir = Path(out_dir)
    record = metrics_recorder(out_dir / METRICS_FILE, on_epoch)

    device = resolve_device(site.device, site.cpu_threads)
    model = fresh_model(cfg, chosen)
    stage = Stage(FINETUNE, [SiteCases(site, dev)], site.site_id, cfg.finetune.epochs)
    run_stage(model, stage, cfg, device, on_epoch=record)
    probs = predict_cases(model, SiteCases(site, test), cfg.finetune.batch_size, device)
    rows = [
        Prediction(r.case.subject_id, "test", label, float(p))
        for r, label, p in zip(test, SiteCases(site, test).labels, probs, strict=True)
    ]
    write_predictions(out_dir / PREDICTIONS_FILE, rows)
    results = _summary(cfg, cohort, chosen, rows, len(dev))
    write_results(out_dir / RESULTS_FILE, results)
    return results


def _summary(
    cfg: ExperimentConfig, cohort: SiteCohort, init: Init, rows: Sequence[Prediction], n_dev: int
) -> dict[str, Any]:
    """The ``results.json`` content of one arm."""
    cfg_dict = to_dict(cfg)
    labels = [r.label for r in rows]
    return {
        "site_id": cohort.site_id,
        "init": init.name,
        "init_checkpoint": None if init.path is None else str(init.path),
        "init_sha256": init.sha256,
        "config_hash": config_hash(cfg_dict),
        "seed": cfg.seed,
        "bootstrap": cfg.finetune.bootstrap,
        "epochs": cfg.finetune.epochs,
        "protocol": PROTOCOL,
        "test_split_digest": split_digest(cohort.test_ids),
        "n_dev": n_dev,
        "n_test": len(rows),
        "n_test_positive": sum(labels),
        "test": _metric_table(labels, np.array([r.prob for r in rows]), cfg),
    }
