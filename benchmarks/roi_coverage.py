"""Does the model's ROI hold the findings? Share of endometriosis-sign volume inside the ROI box.

The ROI (``data.roi_size`` voxels at ``data.target_spacing`` mm) is centred on the T2 field of view, as
``endofed.data.geometry.target_grid`` places it. For every positive subject of a synthetic cohort this reads
the ground-truth sign records (centre, radius; ``truth/subjects.csv``) and the T2 grid centre, samples each
sign as a ball and reports, per candidate ROI:

  voxel share   share of all sign volume inside the box (volume-weighted over subjects)
  >=1 sign      share of positives with at least half of one sign inside (the label is visible at all)
  all signs     share of positives with every sign at least 95% inside

The box keeps the T2's obliquity, as the model's grid does (``ras_direction``): sign centres are measured along
the tilted box axes, so oblique acquisitions are handled.

Usage: python benchmarks/roi_coverage.py --data DIR [--config configs/tiny.yaml] [--roi-mm 160,160,96 ...]
Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from endofed.config import load_config
from endofed.data.geometry import grid_centre_mm, ras_direction

ROOT = Path(__file__).resolve().parents[1]
SIGNS = ("endometrioma", "deep_nodule", "pod_obliteration")
Balls = list[list[tuple[np.ndarray, float]]]  # per positive subject: (centre, radius) of each sign


def sign_balls(data: Path) -> Balls:
    """Per positive subject: (centre in the ROI's frame, mm from the T2 grid centre along the box axes; radius)."""
    subjects = []
    for truth in sorted(data.glob("*/truth/subjects.csv")):
        site = truth.parent.parent
        with truth.open() as handle:
            for row in csv.DictReader(handle):
                if row["label_true"] != "1":
                    continue
                t2 = nib.load(str(site / "data" / row["subject_id"] / "T2.nii.gz"))
                affine = np.asarray(t2.affine, float)
                centre, axes = grid_centre_mm(affine, t2.shape), ras_direction(affine)  # axes: orthonormal columns
                signs = [f for f in json.loads(row["findings"]) if f["finding"] in SIGNS]
                offsets = [axes.T @ (np.asarray(f["centre_mm"]) - centre) for f in signs]
                subjects.append([(o, float(f["radius_mm"])) for o, f in zip(offsets, signs, strict=True)])
    return subjects


def coverage(subjects: Balls, box_mm: np.ndarray, points: np.ndarray) -> tuple[float, ...]:
    """(voxel share, share with >= 1 sign half inside, share with all signs 95% inside) for a centred box."""
    half = box_mm / 2.0
    inside_volume, total_volume, any_in, all_in = 0.0, 0.0, 0, 0
    for signs in subjects:
        shares = [float(np.mean(np.all(np.abs(c + r * points) <= half, axis=1))) for c, r in signs]
        volumes = [r**3 for _, r in signs]
        inside_volume += sum(s * v for s, v in zip(shares, volumes, strict=True))
        total_volume += sum(volumes)
        any_in += max(shares) >= 0.5
        all_in += min(shares) >= 0.95
    n = max(len(subjects), 1)
    return inside_volume / max(total_volume, 1e-9), any_in / n, all_in / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an `endofed synth` output folder")
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="the config's ROI first")
    parser.add_argument("--roi-mm", nargs="*", default=["160,128,96", "160,160,96", "192,160,112"])
    args = parser.parse_args()
    data_cfg = load_config(args.config).data
    rng = np.random.default_rng(0)
    points = rng.normal(size=(400, 3))
    points *= (rng.random((400, 1)) ** (1 / 3)) / np.linalg.norm(points, axis=1, keepdims=True)  # uniform in a ball
    subjects = sign_balls(args.data)
    configured = np.asarray(data_cfg.roi_size, float) * np.asarray(data_cfg.target_spacing, float)
    boxes = [("config", configured), *((text, np.asarray(text.split(","), float)) for text in args.roi_mm)]
    print(f"{len(subjects)} positive subjects in {args.data}")
    print(f"{'ROI':>10s} {'box mm':>16s} {'voxel share':>12s} {'>=1 sign':>9s} {'all signs':>10s}")
    for name, box in boxes:
        share, any_in, all_in = coverage(subjects, box, points)
        size = "x".join(f"{v:g}" for v in box)
        print(f"{name:>10s} {size:>16s} {share:12.3f} {any_in:9.3f} {all_in:10.3f}")


if __name__ == "__main__":
    main()
