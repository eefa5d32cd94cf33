"""Linear probe: do the MIM encoder's frozen features know more about the label than a random encoder's?

Issue 18, item 2. For each encoder given (``encoder.safetensors`` of ``endofed pretrain`` or of a compare unit)
and for a random-init encoder of the same config, this embeds every labelled case of the sites with the
classifier's own pooling (frozen, eval mode, no augmentation), fits an L2 logistic regression on the
development cases of all sites (standardised features, C chosen by 5-fold cross-validated AUC on them only),
and reports the AUC on the held-out test patients with a 95% patient bootstrap CI. The split is the one every
arm uses (``load_cohort``: the manifest's fixed test patients, else ``finetune.test_fraction``).

Usage:
    python benchmarks/linear_probe.py --sites DIR [--config configs/cpu.yaml] --encoder PATH [PATH ...]
Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from endofed.config import load_config, load_site_config
from endofed.data.loaders import SiteCases, make_loader, parts_dataset
from endofed.finetune.metrics import bootstrap_all
from endofed.io.checkpoint import load_checkpoint
from endofed.launch.simulation import find_site_yamls
from endofed.models.classifier import Classifier3D, modality_presence
from endofed.training.cohort import load_cohort
from endofed.training.device import resolve_device, usable_cores
from endofed.training.engine import model_seed, new_classifier

ROOT = Path(__file__).resolve().parents[1]


def embed(model: Classifier3D, parts: list[SiteCases], batch_size: int, device: torch.device) -> np.ndarray:
    """``(N, E)`` pooled, normalised features of every case of ``parts`` (in order), frozen."""
    model.to(device).eval()
    out = []
    with torch.no_grad():
        for batch in make_loader(parts_dataset(parts), batch_size, device):
            present = modality_presence(batch["mask"].to(device))
            x = batch["image"].to(device)
            out.append(model.forward_features(x, None if bool(present.all()) else present).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def probe_auc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int):
    """Test AUC (point, low, high) of a logistic regression fitted on the training features only."""
    probe = make_pipeline(
        StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, scoring="roc_auc", max_iter=5000, random_state=seed)
    )
    probe.fit(train_x, train_y)
    return bootstrap_all(test_y, probe.predict_proba(test_x)[:, 1], 1000, seed)["auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=Path, nargs="+", required=True, help="site YAMLs or folders of site_*.yaml")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    parser.add_argument("--encoder", type=Path, nargs="+", required=True, help="encoder.safetensors files to probe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random encoder and of the bootstrap")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")  # API notices, not results
    cfg = load_config(args.config, [f"seed={args.seed}"])
    device = resolve_device("auto", usable_cores())
    dev_parts, test_parts = [], []
    for path in find_site_yamls(args.sites):
        site = load_site_config(path)
        cohort = load_cohort(site, cfg)
        dev_parts.append(SiteCases(site, cohort.dev_cases()))
        test_parts.append(SiteCases(site, cohort.test_cases()))
    train_y = np.array([y for part in dev_parts for y in part.labels])
    test_y = np.array([y for part in test_parts for y in part.labels])
    print(f"{len(train_y)} development cases ({train_y.sum()} positive), {len(test_y)} test patients")
    encoders: list[tuple[str, dict[str, torch.Tensor] | None]] = [("random init", None)]
    encoders += [(str(path), load_checkpoint(path)[0]) for path in args.encoder]
    print("| encoder | probe test AUC [95% CI] |\n|---|---|")
    for name, weights in encoders:
        model = new_classifier(cfg, model_seed(cfg, "classifier"), weights)
        batch = cfg.finetune.batch_size
        point, low, high = probe_auc(
            embed(model, dev_parts, batch, device), train_y, embed(model, test_parts, batch, device), test_y, args.seed
        )
        print(f"| {name} | {point:.3f} [{low:.3f}, {high:.3f}] |", flush=True)


if __name__ == "__main__":
    main()
