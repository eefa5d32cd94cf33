"""Honesty report of the synthetic benchmark: cross-validated AUCs of simple baselines (see endofed.synth.honesty).

Generates a cohort (default: the demo3 preset, tiny scale), preprocesses every case as training would
(configs/tiny.yaml), puts the ground-truth findings on the same grid, then prints per site and pooled:
  histogram   logistic regression on global T1+T2 intensity histograms (should stay <= 0.65)
  oracle      finding volumes from the ground truth (the signal exists)
  cand T1     candidate regions (all findings, type hidden) described by T1 only
  cand T2     ... by T2 only
  cand T1+T2  ... by both (should beat either alone)
True labels are used (before label noise): the most favourable case for every baseline.

Usage: python benchmarks/synth_honesty.py [--data DIR | --preset demo3] [--seed 0] [--config configs/tiny.yaml]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from endofed.config import DataConfig, load_config, load_site_config
from endofed.data.manifest import load_cases
from endofed.data.nifti import Volume, load_volume
from endofed.synth.cohort import generate
from endofed.synth.honesty import BASELINES, baseline_features, cross_validated_auc
from endofed.synth.profile import load_preset

ROOT = Path(__file__).resolve().parents[1]


def site_features(site_yaml: Path, data_cfg: DataConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Feature matrices of every baseline and the true labels of one site (read from its files)."""
    site = load_site_config(site_yaml)
    truth_dir = site.data_root.parent / "truth"
    with (truth_dir / "subjects.csv").open() as handle:
        true_label = {row["subject_id"]: int(row["label_true"]) for row in csv.DictReader(handle)}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in BASELINES}
    labels = []
    for case in load_cases(site):
        truth = nib.load(str(truth_dir / f"{case.subject_id}_T2_findings.nii.gz"))  # may be all zero
        findings = Volume(np.asarray(truth.dataobj, dtype=np.float32), np.asarray(truth.affine, float), "uint8")
        features = baseline_features(load_volume(case.t1), load_volume(case.t2), findings, data_cfg)
        for name in BASELINES:
            rows[name].append(features[name])
        labels.append(true_label[case.subject_id])
    return {name: np.stack(values) for name, values in rows.items()}, np.array(labels)


def main() -> None:
    """Generate (or read) a cohort, compute the baselines and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an existing `endofed synth` output folder")
    parser.add_argument("--preset", default="demo3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    args = parser.parse_args()
    data_cfg = load_config(args.config).data
    out = args.data or Path(tempfile.mkdtemp(prefix="endofed-honesty-"))
    if args.data is None:
        started = time.perf_counter()
        generate(load_preset(args.preset), out, "tiny", args.seed)
        print(f"generated preset {args.preset} (seed {args.seed}) in {time.perf_counter() - started:.0f} s: {out}")
    per_site = {
        path.stem.removeprefix("site_"): site_features(path, data_cfg) for path in sorted(out.glob("site_*.yaml"))
    }
    pooled = {name: np.concatenate([f[name] for f, _ in per_site.values()]) for name in BASELINES}
    pooled_labels = np.concatenate([y for _, y in per_site.values()])
    print(f"\ncross-validated AUC (5-fold, logistic regression, true labels), data: {out}")
    print(f"{'site':12s} {'n':>4s} {'pos':>4s} " + " ".join(f"{b:>11s}" for b in BASELINES))
    for name, (features, labels) in [*per_site.items(), ("pooled", (pooled, pooled_labels))]:
        aucs = [cross_validated_auc(features[b], labels, args.seed) for b in BASELINES]
        print(f"{name:12s} {len(labels):4d} {int(labels.sum()):4d} " + " ".join(f"{a:11.3f}" for a in aucs))


if __name__ == "__main__":
    main()
