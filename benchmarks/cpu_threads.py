"""How many torch threads should a CPU site use? One MIM epoch at 1 and 2 threads, quiet and under load.

A site process rarely has the machine to itself: in simulation several sites share it, and at a hospital
other jobs run beside it. This benchmark times the compute of one ``pretrain_epochs`` epoch (batches already
in memory, ``configs/tiny.yaml`` or ``--config``) for each thread count, first on a quiet machine and then
with ``--load`` busy processes beside it (each a one-thread matrix-multiply loop, ended by PID). Medians
over ``--repeats``. The choice in ``endofed/training/device.py`` (half the usable cores, or the launcher's
per-site share) rests on these figures.

Usage: python benchmarks/cpu_threads.py [--subjects 16] [--repeats 3] [--load 1 3] [--threads 1 2]
Run by hand on an otherwise idle machine, never in CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from endofed.config import load_config, load_site_config
from endofed.data.loaders import case_dataset, make_loader
from endofed.models.factory import build_mae
from endofed.ssl.pretrain import pretrain_epochs
from endofed.synth.example import write_example_site
from endofed.training.cohort import load_cohort

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import numpy as np\na = np.ones((400, 400))\nwhile True:\n    a = a @ a.T / 400.0\n"


def busy_processes(count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` one-thread busy loops (the caller ends them by PID)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-c", BUSY], env=env) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=16, help="example-site subjects (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement (default 3)")
    parser.add_argument("--load", type=int, nargs="+", default=[1, 3], help="busy processes beside the run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="experiment config")
    args = parser.parse_args()
    cfg = load_config(args.config)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        site = load_site_config(write_example_site(Path(tmp), n_subjects=args.subjects, seed=0))
        cases = load_cohort(site, cfg).pretrain_cases()
        batches = list(make_loader(case_dataset(site, cases), cfg.pretrain.batch_size, cpu, shuffle_seed=0))
    model = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(0))

    def epoch_seconds(threads: int) -> float:
        torch.set_num_threads(threads)
        pretrain_epochs(model, batches, cfg.pretrain, cpu, num_epochs=1, first_epoch=0, seed=0)  # warm-up
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            pretrain_epochs(model, batches, cfg.pretrain, cpu, num_epochs=1, first_epoch=0, seed=0)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    print(f"{len(cases)} volumes/epoch, config {args.config}, {os.cpu_count()} cores")
    print(f"{'busy processes':>14s} " + " ".join(f"{t:>2d} thread(s) s/epoch" for t in args.threads) + "  ratio")
    for load in [0, *args.load]:
        busy = busy_processes(load)
        try:
            time.sleep(1.0 if load else 0.0)
            seconds = [epoch_seconds(t) for t in args.threads]
        finally:
            for process in busy:
                process.kill()
                process.wait()
        ratio = seconds[-1] / seconds[0]
        print(f"{load:14d} " + " ".join(f"{s:>20.2f}" for s in seconds) + f"  {ratio:5.2f}")


if __name__ == "__main__":
    main()
