"""Generation speed of `endofed synth` on one CPU core: the demo3 cohort at tiny scale, and the full-scale rate.

Usage: python benchmarks/synth_speed.py [--full-subjects 6] [--skip-demo]
Prints wall seconds for the whole demo3 cohort (300 subjects, tiny) and seconds per subject at full scale.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from endofed.synth.cohort import generate  # noqa: E402
from endofed.synth.profile import load_preset  # noqa: E402


def folder_mb(folder: Path) -> float:
    """Size of the NIfTI images (not the ground truth) under a folder, MB."""
    return sum(p.stat().st_size for p in folder.rglob("data/*/*.nii.gz")) / 1e6


def main() -> None:
    """Time the tiny demo cohort and a few full-scale subjects."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--full-subjects", type=int, default=6, help="subjects per full-scale timing (split over sites)"
    )
    parser.add_argument("--skip-demo", action="store_true", help="only the full-scale timing")
    args = parser.parse_args()
    sites = load_preset("demo3")
    root = Path(tempfile.mkdtemp(prefix="endofed-synth-speed-"))
    try:
        if not args.skip_demo:
            started = time.perf_counter()
            generate(sites, root / "tiny", "tiny", seed=0)
            seconds = time.perf_counter() - started
            n = sum(s.cohort.subjects for s in sites)
            print(f"demo3, tiny scale: {n} subjects in {seconds:.1f} s ({n / seconds:.1f} subjects/s, "
                  f"{folder_mb(root / 'tiny') / n:.2f} MB of images per subject)")  # fmt: skip
        per_site = max(1, args.full_subjects // len(sites))
        small = [dataclasses.replace(s, cohort=dataclasses.replace(s.cohort, subjects=per_site)) for s in sites]
        times = []
        for site in small:
            started = time.perf_counter()
            generate([site], root / f"full-{site.name}", "full", seed=0)
            times.append((time.perf_counter() - started) / per_site)
        total = per_site * len(small)
        full_mb = sum(folder_mb(root / f"full-{site.name}") for site in small)
        print(f"full scale: median {statistics.median(times):.2f} s per subject over {len(small)} sites "
              f"({', '.join(f'{t:.2f}' for t in times)}), {full_mb / total:.1f} MB of images per subject")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
