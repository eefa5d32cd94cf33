"""Single-site masked-image-modelling pre-training: site data in, ``encoder.safetensors`` out.

Pre-training uses every usable case of the site, labelled or not, **except the held-out test patients**
(see :mod:`endofed.training.cohort` for why). Outputs in ``out_dir``:

* ``encoder.safetensors`` + ``encoder.json``: the encoder's state only (decoder stays here, unsaved), with
  the config, its hash, the preprocessing digest of the data passport, the site id, the epochs, the final
  loss and a digest of the excluded test split (site-local);
* ``metrics.jsonl``: one line per epoch (loss, lr, steps, volumes, seconds, volumes/s);
* ``reconstruction.png``: what the MAE reconstructs on two training cases (shows images: keep it local).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from endofed.config import ExperimentConfig, SiteConfig, to_dict
from endofed.data.loaders import SiteCases, parts_dataset
from endofed.errors import DataError
from endofed.federated.protocol import PRETRAIN
from endofed.io.checkpoint import config_hash, module_state, save_checkpoint
from endofed.io.figures import write_reconstruction_preview
from endofed.io.jsonl import json_safe
from endofed.models.mae import MaskedAutoencoder3D
from endofed.seeds import derive_seed
from endofed.ssl.reconstruction import reconstruct_cases
from endofed.training.cohort import load_cohort, split_digest
from endofed.training.device import resolve_device
from endofed.training.engine import MetricsCallback, Stage, model_seed, new_mae, planned_steps, run_stage
from endofed.training.records import METRICS_FILE, metrics_recorder

LOGGER = logging.getLogger(__name__)
ENCODER_FILE = "encoder.safetensors"
PREVIEW_FILE = "reconstruction.png"
PREVIEW_CASES = 2


def write_pretrain_preview(
    model: MaskedAutoencoder3D,
    dataset: Dataset[dict[str, torch.Tensor]],
    cfg: ExperimentConfig,
    device: torch.device,
    path: Path,
) -> Path:
    """Reconstruct the first cases of ``dataset`` with fixed masks and draw them (shows images: keep it local)."""
    count = min(PREVIEW_CASES, len(dataset))  # type: ignore[arg-type]
    image = torch.stack([dataset[i]["image"] for i in range(count)]).to(device)
    generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "preview"))
    previews = reconstruct_cases(model, image, cfg.pretrain, generator)
    return write_reconstruction_preview([(f"case {i + 1}", p) for i, p in enumerate(previews)], path)


def pretrain_site(
    site: SiteConfig,
    cfg: ExperimentConfig,
    out_dir: Path,
    on_epoch: MetricsCallback | None = None,
    on_step: MetricsCallback | None = None,
    on_start: Callable[[int], None] | None = None,
    allow_failures: bool = False,
) -> Path:
    """Pre-train an MAE on one site's non-test cases and save its encoder.

    Args:
        site: the site (data, work dir, device).
        cfg: experiment config (``data``, ``model``, ``pretrain``; ``finetune.test_fraction`` and the seeds fix
            the held-out test split).
        out_dir: output folder (created).
        on_epoch: called with each epoch's metrics (as written to ``metrics.jsonl``).
        on_step: called after every optimiser step with ``step``, ``lr`` and ``loss``.
        on_start: called once with the total number of optimiser steps, before training.
        allow_failures: train on the usable cases even if some cases failed the data check.

    Returns:
        Path of ``encoder.safetensors``.

    Raises:
        DataError: the site is not ready, or no case is left once the test split is held out.
    """
    device = resolve_device(site.device, site.cpu_threads)
    cohort = load_cohort(site, cfg, allow_failures)
    cases = cohort.pretrain_cases()
    if not cases:
        raise DataError(f"site {site.site_id!r} has no case left for pre-training once the test split is held out")
    stage = Stage(PRETRAIN, [SiteCases(site, cases)], site.site_id, cfg.pretrain.epochs)
    if on_start is not None:
        on_start(planned_steps(stage, cfg))
    out_dir = Path(out_dir)
    record = metrics_recorder(out_dir / METRICS_FILE, on_epoch)

    model = new_mae(cfg, model_seed(cfg, "mae"))
    history = run_stage(model, stage, cfg, device, on_epoch=record, on_step=on_step).history
    write_pretrain_preview(model, parts_dataset(stage.parts), cfg, device, out_dir / PREVIEW_FILE)
    cfg_dict = to_dict(cfg)
    metadata = {
        "kind": "encoder",
        "site_id": site.site_id,
        "config": cfg_dict,
        "config_hash": config_hash(cfg_dict),
        "preprocessing_digest": cohort.passport["preprocessing_digest"],
        "test_split_digest": split_digest(cohort.test_ids),
        "n_test_excluded": len(cohort.test_ids),
        "n_volumes": stage.volumes,
        "epochs": cfg.pretrain.epochs,
        "final_loss": json_safe(history[-1]["loss"]),  # None if training diverged
    }
    path = save_checkpoint(out_dir / ENCODER_FILE, module_state(model, "encoder"), metadata)
    LOGGER.info("site %s: pre-trained on %d volumes, final loss %.4f", site.site_id, stage.volumes, history[-1]["loss"])
    return path
