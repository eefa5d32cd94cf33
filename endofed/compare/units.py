"""The units of work of a comparison: each trains one arm for one seed and predicts the held-out test patients.

A unit writes ``unit.json`` into its own folder when, and only when, it has finished: the test predictions
per site, the subjects that trained it (pre-training and fine-tuning, per site), its training history and
a fingerprint of the config. A finished unit with the same fingerprint is not run again (resume).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from endofed.config import ExperimentConfig, SiteConfig, to_dict
from endofed.data.loaders import SiteCases, label_of, parts_dataset
from endofed.data.site import CaseResult
from endofed.errors import ConfigError
from endofed.federated.protocol import (
    FINETUNE,
    PARTITION_ID,
    PRETRAIN,
    ROUNDS_FILE,
    RUN_LOG,
    SITE_STATE_DIR,
    SUBJECTS_FILE,
    TRAIN_LOSS,
    global_encoder_file,
)
from endofed.io.checkpoint import config_hash, load_checkpoint, module_state, save_checkpoint
from endofed.launch.simulation import SimulationRequest, run_simulation
from endofed.models.classifier import Classifier3D
from endofed.seeds import derive_seed
from endofed.site_config import usable_cores
from endofed.training.cohort import SiteCohort
from endofed.training.device import resolve_device, sole_job_threads
from endofed.training.engine import Stage, model_seed, new_classifier, new_mae, predict_cases, run_stage
from endofed.training.federated_site import FederatedSite
from endofed.training.site_pretrain import PREVIEW_FILE, write_pretrain_preview

UNIT_FILE = "unit.json"
ENCODER_FILE = "encoder.safetensors"


@dataclass
class Site:
    """A site of the experiment: its config, YAML and cohort (the split is fixed by ``split_seed``)."""

    config: SiteConfig
    yaml: Path
    cohort: SiteCohort

    @property
    def name(self) -> str:
        """The site id."""
        return self.config.site_id

    def pretrain_cases(self) -> SiteCases:
        """Every usable non-test case (labelled or not)."""
        return SiteCases(self.config, self.cohort.pretrain_cases())

    def dev_cases(self) -> SiteCases:
        """Labelled non-test cases (fine-tuning)."""
        return SiteCases(self.config, self.cohort.dev_cases())

    def test_cases(self) -> SiteCases:
        """Labelled held-out test patients (evaluation only)."""
        return SiteCases(self.config, self.cohort.test_cases())


@dataclass
class UnitResult:
    """What a finished unit recorded (the content of ``unit.json``)."""

    name: str
    arm: str
    seed: int
    fraction: float
    predictions: dict[str, list[dict[str, Any]]]  # site -> [{subject, label, prob}]
    pretrain_subjects: dict[str, list[str]] = field(default_factory=dict)  # site -> subjects
    finetune_subjects: dict[str, list[str]] = field(default_factory=dict)
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # curve name -> epochs / rounds
    seconds: float = 0.0
    fingerprint: str = ""


def fingerprint(cfg: ExperimentConfig, sites: list[Site], name: str) -> str:
    """What a unit's result depends on: the config, the sites (and their data passports) and the unit."""
    passports = {s.name: s.cohort.passport.get("preprocessing_digest") for s in sites}
    return config_hash({"config": config_hash(_cfg_dict(cfg)), "sites": passports, "unit": name})


def _cfg_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return to_dict(cfg)


def load_unit(folder: Path, expected: str) -> UnitResult | None:
    """The finished unit in ``folder``, or None; refuses one from another experiment."""
    path = folder / UNIT_FILE
    if not path.exists():
        return None
    result = UnitResult(**json.loads(path.read_text(encoding="utf-8")))
    if result.fingerprint != expected:
        raise ConfigError(
            f"{folder} holds a result of a different experiment (config, sites or data changed); "
            "use another --out, or --fresh to discard the old results"
        )
    return result


def save_unit(folder: Path, result: UnitResult) -> None:
    """Write ``unit.json`` atomically (the unit counts as finished once it exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (UNIT_FILE + ".tmp")
    tmp.write_text(json.dumps(result.__dict__, indent=1, allow_nan=True), encoding="utf-8")
    os.replace(tmp, folder / UNIT_FILE)


def _rows(cases: SiteCases, probs: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"subject": r.case.subject_id, "label": label_of(r), "prob": float(p)}
        for r, p in zip(cases.cases, probs, strict=True)
    ]


def _device(site: Site) -> torch.device:
    """The device of a unit run in this process: compare runs one at a time, so it may use every core."""
    return resolve_device(site.config.device, sole_job_threads(site.config.cpu_threads, usable_cores(), os.environ))


def _predict_sites(model: Classifier3D, sites: list[Site], cfg: ExperimentConfig) -> dict[str, list[dict[str, Any]]]:
    """Each site's test predictions by ``model``."""
    out = {}
    for site in sites:
        test = site.test_cases()
        device = _device(site)
        out[site.name] = _rows(test, predict_cases(model, test, cfg.finetune.batch_size, device))
    return out


def _pretrained_encoder(
    cfg: ExperimentConfig, parts: list[SiteCases], arm: str, tag: str, device: torch.device, folder: Path
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """MIM pre-training on ``parts`` (one site, or pooled); the encoder is saved with a reconstruction preview."""
    model = new_mae(cfg, model_seed(cfg, "mae"))
    result = run_stage(model, Stage(PRETRAIN, parts, tag, cfg.pretrain.epochs), cfg, device)
    write_pretrain_preview(model, parts_dataset(parts), cfg, device, folder / PREVIEW_FILE)
    encoder = module_state(model, "encoder")
    save_checkpoint(folder / ENCODER_FILE, encoder, {"kind": "encoder", "arm": arm, "config": _cfg_dict(cfg)})
    return encoder, result.history


def local_unit(
    cfg: ExperimentConfig,
    sites: list[Site],
    arm: str,
    folder: Path,
    pretrain: bool,
    encoder: dict[str, torch.Tensor] | None = None,
    dev: list[SiteCases] | None = None,
) -> UnitResult:
    """Train centrally on ``sites`` (one: single-site arm; several: pooled) and predict each site's test patients.

    Args:
        cfg: the seed's experiment config.
        sites: whose data trains the model and whose test patients it predicts.
        arm: arm name (recorded).
        folder: the unit folder (pre-training writes ``encoder.safetensors`` and a reconstruction preview).
        pretrain: MIM pre-training first (ignored when ``encoder`` is given).
        encoder: start fine-tuning from these encoder weights (e.g. the federated one).
        dev: the labelled cases to fine-tune on (default: every site's labelled development cases).
    """
    started = time.perf_counter()
    device = _device(sites[0])
    tag = f"{arm}/{'+'.join(s.name for s in sites)}"
    history: dict[str, list[dict[str, float]]] = {}
    pretrain_parts = [s.pretrain_cases() for s in sites] if pretrain and encoder is None else []
    if pretrain_parts:
        encoder, history["pretrain"] = _pretrained_encoder(cfg, pretrain_parts, arm, tag, device, folder)
    dev = dev if dev is not None else [s.dev_cases() for s in sites]
    model = new_classifier(cfg, model_seed(cfg, "classifier"), encoder)
    history["finetune"] = run_stage(model, Stage(FINETUNE, dev, tag, cfg.finetune.epochs), cfg, device).history
    return UnitResult(
        name=str(folder),
        arm=arm,
        seed=cfg.seed,
        fraction=1.0,
        predictions=_predict_sites(model, sites, cfg),
        pretrain_subjects={p.site.site_id: p.subject_ids for p in pretrain_parts},
        finetune_subjects={p.site.site_id: p.subject_ids for p in dev},
        history=history,
        seconds=time.perf_counter() - started,
    )


def run_key(out: Path, seed: int) -> str:
    """The sites' state folder name of this comparison's federation (unique per output folder and seed)."""
    return f"compare-{config_hash({'out': str(out.resolve())})[:12]}-seed{seed}"


def federation_unit(
    cfg: ExperimentConfig,
    sites: list[Site],
    folder: Path,
    config_yaml: Path,
    app_dir: Path,
    key: str,
    resources: tuple[float, float],
    on_start: Callable[[Path], None] | None = None,
) -> UnitResult:
    """Federated MIM pre-training (FedAvg) then federated fine-tuning (FedProx) under Flower's simulation engine.

    The unit's predictions are the FedProx arm's (global encoder + each site's own head); the pre-trained
    global encoder is left in ``folder`` for the local fine-tuning arm. Each site's training subjects come
    from its own round records (``subjects.jsonl`` in its state folder), i.e. from what actually trained.
    """
    started = time.perf_counter()
    for site in sites:  # a previous, interrupted attempt must not leave local state behind
        shutil.rmtree(site.config.work_dir / SITE_STATE_DIR / key, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if on_start is not None:
        on_start(folder / RUN_LOG)
    request = SimulationRequest(
        app_dir, [s.yaml for s in sites], config_yaml, [], folder, resources[0], resources[1], key,
        folder / RUN_LOG,
    )  # fmt: skip
    run_simulation(request)
    encoder, _ = load_checkpoint(folder / global_encoder_file(FINETUNE))
    result = UnitResult(name=str(folder), arm="federation", seed=cfg.seed, fraction=1.0, predictions={})
    for site in sites:
        fed = FederatedSite(site.config, cfg, key)
        test, probs = fed.test_predictions(encoder)
        result.predictions[site.name] = _rows(SiteCases(site.config, test), probs)
        records = [json.loads(line) for line in (fed.state_dir / SUBJECTS_FILE).read_text().splitlines()]
        for phase, target in ((PRETRAIN, result.pretrain_subjects), (FINETUNE, result.finetune_subjects)):
            target[site.name] = sorted({s for r in records if r["phase"] == phase for s in r["subjects"]})
    result.history = _round_history(folder / ROUNDS_FILE, sites)
    result.seconds = time.perf_counter() - started
    return result


def _round_history(path: Path, sites: list[Site]) -> dict[str, list[dict[str, float]]]:
    """Per-site training loss per round and phase, from the server's round log (simulated site k = YAML k)."""
    history: dict[str, list[dict[str, float]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("event") != "train":
            continue
        for entry in record["sites"]:
            index = int(entry.get(PARTITION_ID, -1))
            name = sites[index].name if 0 <= index < len(sites) else str(entry["node"])
            history.setdefault(f"{record['phase']}/{name}", []).append(
                {"round": record["round"], "loss": entry.get(TRAIN_LOSS, float("nan"))}
            )
    return history


def label_subset(site: Site, fraction: float, seed: int) -> SiteCases:
    """The labelled development cases of a label-efficiency unit (the same for both arms of a seed)."""
    dev = site.dev_cases()
    draw = derive_seed(seed, "labels", site.name, f"{fraction:g}")
    return SiteCases(site.config, subsample_labelled(dev.cases, fraction, draw))


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
