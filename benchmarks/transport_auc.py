"""Does int8 both ways change the fine-tuned AUC? The evidence experiment's federated arms, fp32 vs delta_int8.

Runs ``endofed compare`` twice on the evidence benchmark (``make evidence`` renders its sites into
runs/evidence/data): ``configs/experiments/transport-fp32.yaml`` and ``transport-int8.yaml``, which are the
evidence experiment's federated arms (federated MIM -> local fine-tune, and -> federated FedProx fine-tune) with
the same model, budgets, split and seeds, differing only in ``federation.transport``. Both runs are resumable
(their folders are kept). Then, per arm, it pairs the two runs' predictions patient by patient (same test
patients, same seeds) and prints the all-sites AUC of each (mean over seeds), the difference int8 - fp32 with a
paired bootstrap 95% CI over the test patients, and the largest per-site difference.

Usage: python benchmarks/transport_auc.py [--sites runs/evidence/data] [--out runs/transport-auc]
           [--seeds 0 1 2] [--bootstrap 1000]
About 7 minutes per seed and transport on a 2-core CPU machine. Prints figures; run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"fp32": "transport-fp32.yaml", "delta_int8": "transport-int8.yaml"}
ARMS = ("fed_ssl", "fed_ssl_fedprox")


def predictions(out: Path, arm: str, seed: int) -> dict[str, tuple[int, float]]:
    """``{subject: (label, probability)}`` of one arm and seed, over every site, from the units' records."""
    found: dict[str, tuple[int, float]] = {}
    for unit in sorted((out / "units" / f"seed{seed}").rglob("unit.json")):
        record = json.loads(unit.read_text())
        if record["arm"] != arm or float(record.get("fraction", 1.0)) != 1.0:
            continue
        for rows in record["predictions"].values():
            found |= {row["subject"]: (int(row["label"]), float(row["prob"])) for row in rows}
    if not found:
        raise SystemExit(f"no predictions of arm {arm} seed {seed} under {out}")
    return found


def seed_mean_auc(labels: np.ndarray, probs: np.ndarray, index: np.ndarray) -> float:
    """Mean over seeds of the all-sites AUC on the patients ``index`` (``probs``: seeds x patients)."""
    return float(np.mean([roc_auc_score(labels[index], p[index]) for p in probs]))


def compare_arm(outs: dict[str, Path], arm: str, seeds: list[int], resamples: int) -> dict[str, float]:
    """AUCs of both transports for one arm, their paired difference and its bootstrap CI."""
    by_transport = {t: [predictions(out, arm, s) for s in seeds] for t, out in outs.items()}
    subjects = sorted(by_transport["fp32"][0])
    labels = np.array([by_transport["fp32"][0][s][0] for s in subjects])
    probs = {t: np.array([[run[s][1] for s in subjects] for run in runs]) for t, runs in by_transport.items()}
    everyone = np.arange(len(subjects))
    auc = {t: seed_mean_auc(labels, p, everyone) for t, p in probs.items()}

    def gain(index: np.ndarray) -> float:
        return seed_mean_auc(labels, probs["delta_int8"], index) - seed_mean_auc(labels, probs["fp32"], index)

    rng, diffs = np.random.default_rng(0), []
    while len(diffs) < resamples:
        index = rng.integers(0, len(subjects), len(subjects))
        if labels[index].min() != labels[index].max():  # both classes drawn
            diffs.append(gain(index))
    sites = sorted({s.rsplit("-", 1)[0] for s in subjects})
    per_site = [gain(np.array([i for i, s in enumerate(subjects) if s.startswith(f"{site}-")])) for site in sites]
    low, high = np.percentile(diffs, [2.5, 97.5])
    change = float(np.abs(probs["delta_int8"] - probs["fp32"]).max())
    return {"fp32": auc["fp32"], "int8": auc["delta_int8"], "diff": auc["delta_int8"] - auc["fp32"],
            "low": float(low), "high": float(high), "site_max": float(max(per_site, key=abs)),
            "patients": len(subjects), "max_prob_change": change}  # fmt: skip


def main() -> None:
    """Run (or resume) both compares, then print the paired table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=Path, default=ROOT / "runs" / "evidence" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transport-auc")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    outs = {t: args.out / t for t in RUNS}
    for transport, yaml_name in RUNS.items():
        command = [str(Path(sys.executable).with_name("endofed")), "compare", "--experiment",
                   str(ROOT / "configs" / "experiments" / yaml_name), "--sites", str(args.sites),
                   "--out", str(outs[transport]), "--seeds", *map(str, args.seeds)]  # fmt: skip
        print(f"{transport}: endofed {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
    print(f"\nall-sites test AUC, mean over seeds {args.seeds}; difference int8 - fp32, paired bootstrap 95% CI "
          f"({args.bootstrap} resamples of the test patients)")  # fmt: skip
    print(f"{'arm':18s} {'fp32':>7s} {'int8':>7s} {'int8-fp32':>10s} {'95% CI':>18s} {'largest site diff':>18s}"
          f" {'max |prob change|':>18s}")  # fmt: skip
    for arm in ARMS:
        r = compare_arm(outs, arm, args.seeds, args.bootstrap)
        print(f"{arm:18s} {r['fp32']:7.3f} {r['int8']:7.3f} {r['diff']:+10.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"
              f" {r['site_max']:+18.4f} {r['max_prob_change']:18.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
