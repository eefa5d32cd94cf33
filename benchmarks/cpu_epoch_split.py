"""Where does a CPU pre-training epoch go: data loading or compute?

Generates an example site, fills its cache with ``configs/tiny.yaml`` (or ``--config``), builds the same loader
as ``endofed pretrain`` (all non-test cases, memory-mapped cache, main-process loading) and times, per epoch:

  data     : iterating the DataLoader alone (cache reads, tensor conversion, collation)
  compute  : one ``pretrain_epochs`` epoch over the same batches already in memory (mask, forward, loss,
             backward, AdamW)
  full     : one real epoch (DataLoader + compute), to check that data + compute adds up

A first, untimed epoch warms the page cache and PyTorch. Medians over ``--repeats``.

Usage: python benchmarks/cpu_epoch_split.py [--subjects 16] [--repeats 3] [--threads N] [--config YAML]
Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from endofed.config import load_config, load_site_config
from endofed.data.loaders import case_dataset, make_loader
from endofed.models.factory import build_mae
from endofed.ssl.pretrain import pretrain_epochs
from endofed.synth.example import write_example_site
from endofed.training.cohort import load_cohort

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=16, help="example-site subjects (default 16)")
    parser.add_argument("--in-plane", type=float, default=1.2, help="T2 in-plane mm of the generated site")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="experiment config")
    return parser.parse_args()


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        site_yaml = write_example_site(Path(tmp), n_subjects=args.subjects, seed=0, in_plane_mm=args.in_plane)
        site = load_site_config(site_yaml)
        cohort = load_cohort(site, cfg)
        cases = cohort.select(("train", "val"), labelled_only=False)
        loader = make_loader(case_dataset(site, cases), cfg.pretrain.batch_size, cpu, shuffle_seed=0)
        model = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(0))
        one_epoch = {"num_epochs": 1, "first_epoch": 0, "seed": 0}

        batches = list(loader)  # warm-up of the page cache, and the in-memory batches for the compute timing
        pretrain_epochs(model, batches, cfg.pretrain, cpu, **one_epoch)  # warm-up of PyTorch
        data = median_seconds(lambda: sum(1 for _ in loader), args.repeats)
        compute = median_seconds(lambda: pretrain_epochs(model, batches, cfg.pretrain, cpu, **one_epoch), args.repeats)
        full = median_seconds(lambda: pretrain_epochs(model, loader, cfg.pretrain, cpu, **one_epoch), args.repeats)

    roi = "x".join(map(str, cfg.data.roi_size))
    print(
        f"config {args.config}: ROI {roi}, ViT {cfg.model.embed_dim}x{cfg.model.depth}, batch {cfg.pretrain.batch_size}"
    )
    print(f"{len(cases)} volumes/epoch in {len(loader)} batches, {torch.get_num_threads()} torch threads")
    print(f"data loading : {data:8.3f} s/epoch  ({len(cases) / data:8.1f} volumes/s)")
    print(f"compute      : {compute:8.3f} s/epoch  ({len(cases) / compute:8.1f} volumes/s)")
    print(f"full epoch   : {full:8.3f} s/epoch  (data + compute = {data + compute:.3f} s)")
    print(f"data share   : {data / (data + compute):8.1%} of data + compute")


if __name__ == "__main__":
    main()
