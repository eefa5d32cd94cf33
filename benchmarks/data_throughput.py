"""Data-layer throughput on one CPU core: preprocessing (cases/s) and cache reads (volumes/s).

Generates an example site at realistic resolution (T2 0.6 x 0.6 x 3.6 mm, 333 x 333 x 22, int16 .nii.gz;
T1 1.6 x 1.6 x 3.6 mm on another grid and FOV), then times, per case:
  read    : load both NIfTI files (gzip decode + scaling)
  prep    : preprocess_case (two world-coordinate resamplings, FOV masks, normalisation)
  write   : cache write
and, over the whole cache, memory-mapped reads through the training dataset (image + mask -> tensors).

Usage: python benchmarks/data_throughput.py [--subjects 16] [--repeats 3] [--in-plane 0.6] [--config YAML]
Prints medians; run by hand, never in CI.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # single core, before numpy/torch start their pools
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from endofed.config import load_config, load_site_config  # noqa: E402
from endofed.data.cache import VolumeCache, cache_key, file_digest  # noqa: E402
from endofed.data.dataset import CachedVolumes  # noqa: E402
from endofed.data.manifest import load_cases  # noqa: E402
from endofed.data.nifti import load_volume  # noqa: E402
from endofed.data.preprocess import preprocess_case  # noqa: E402
from endofed.synth.example import write_example_site  # noqa: E402


def time_preprocessing(cases, cfg, cache: VolumeCache) -> dict[str, list[float]]:
    """Per-case seconds of each stage, cold cache."""
    stages: dict[str, list[float]] = {"hash": [], "read": [], "prep": [], "write": [], "total": []}
    for case in cases:
        t0 = time.perf_counter()
        key = cache_key(file_digest(case.t1), file_digest(case.t2), cfg)
        t1 = time.perf_counter()
        t1_vol, t2_vol = load_volume(case.t1), load_volume(case.t2)
        t2 = time.perf_counter()
        pre = preprocess_case(t1_vol, t2_vol, cfg)
        t3 = time.perf_counter()
        cache.put(key, pre.image.astype(cfg.cache_dtype), pre.mask, {"label": case.label})
        t4 = time.perf_counter()
        for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
            stages[name].append(value)
    return stages


def time_cache_reads(dataset: CachedVolumes, repeats: int) -> list[float]:
    """Volumes per second of full passes over the dataset (each pass opens every entry again)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(len(dataset)):
            sample = dataset[index]
            assert sample["image"].dtype == torch.float32
        rates.append(len(dataset) / (time.perf_counter() - start))
    return rates


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="cache read passes")
    parser.add_argument("--in-plane", type=float, default=0.6, help="T2 in-plane spacing in mm (0.5 = 400 x 400)")
    parser.add_argument("--config", default=None, help="experiment config (default: built-in defaults)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config).data
    root = Path(tempfile.mkdtemp(prefix="endofed-bench-"))
    try:
        started = time.perf_counter()
        site = load_site_config(
            write_example_site(root / "site", n_subjects=args.subjects, seed=0, in_plane_mm=args.in_plane)
        )
        print(f"generated {args.subjects} cases in {time.perf_counter() - started:.1f} s under {root}")
        cases = load_cases(site)
        cache = VolumeCache(root / "cache")
        stages = time_preprocessing(cases, cfg, cache)
        size_mb = sum(p.stat().st_size for p in (root / "site" / "data").rglob("*.nii.gz")) / 1e6 / len(cases)
        print(f"\nsource: {size_mb:.1f} MB per case (.nii.gz, T1 + T2); ROI {cfg.roi_size} at {cfg.target_spacing} mm")
        print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
        print("\npreprocessing, cold cache, per case (median seconds over cases):")
        total = statistics.median(stages["total"])
        for name, values in stages.items():
            share = statistics.median(values) / total
            print(f"  {name:6s} {statistics.median(values):7.3f} s  ({share:5.1%} of total)")
        print(f"  => {1.0 / total:.2f} cases/s on one core")
        keys = [cache_key(file_digest(c.t1), file_digest(c.t2), cfg) for c in cases]
        dataset = CachedVolumes(cache, keys, [c.label for c in cases])
        rates = time_cache_reads(dataset, args.repeats)
        volume_mb = dataset[0]["image"].numel() * 4 / 1e6
        print(f"\ncache reads (memory-mapped, {volume_mb:.1f} MB float32 image + mask per volume):")
        print(
            f"  median {statistics.median(rates):.0f} volumes/s over {args.repeats} passes (all: "
            + ", ".join(f"{r:.0f}" for r in rates)
            + ")"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
