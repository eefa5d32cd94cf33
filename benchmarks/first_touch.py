"""What a fresh process pays to touch new memory and write new files of a ViT-B round's size, first time vs later.

A site's ClientApp is a fresh process every round, and a ViT-B round writes 440 MB (the received global, 347 MB
fp32, and the decoder with its AdamW moments). On a VM whose guest hands free memory back to the host (e.g. the
kernel's DAMON reclaim, ``kdamond``), the first touch of new pages is much slower than later ones. This prints,
for ``--repeats`` iterations in one process: allocate-and-fill, fill again, write a new file, and write a new
safetensors file, each of ``--mb`` MB. Iteration 1 is what a fresh ClientApp sees.

Usage: python benchmarks/first_touch.py [--mb 440] [--repeats 5] [--dir .]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def _write_raw(path: Path, data: np.ndarray) -> None:
    with path.open("wb") as out:
        out.write(memoryview(data))


def one_iteration(size: int, folder: Path) -> dict[str, float]:
    """Seconds for each step on ``size`` new bytes (the buffer and files are dropped after)."""
    took: dict[str, float] = {}
    start = time.perf_counter()
    data = np.full(size, 1, np.uint8)
    took["allocate and fill"] = time.perf_counter() - start
    start = time.perf_counter()
    data.fill(2)
    took["fill again"] = time.perf_counter() - start
    raw = folder / "raw"
    start = time.perf_counter()
    _write_raw(raw, data)
    took["new file"] = time.perf_counter() - start
    raw.unlink()
    tensor = torch.from_numpy(data[: size - size % 4].view(np.float32))
    target = folder / "state.safetensors"
    start = time.perf_counter()
    save_file({"x": tensor}, str(target))
    took["new safetensors"] = time.perf_counter() - start
    target.unlink()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=440, help="size of each buffer and file in MB (default 440)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("."), help="where the files go (removed after)")
    args = parser.parse_args()
    size = args.mb * 10**6
    with tempfile.TemporaryDirectory(dir=args.dir, prefix=".first-touch-") as folder:
        runs = [one_iteration(size, Path(folder)) for _ in range(args.repeats)]
    print(f"{args.mb} MB per step, {args.repeats} iterations in one process (iteration 1 = a fresh process)")
    print(f"{'step':20s} {'first s':>8s} {'GB/s':>6s} {'later median s':>15s} {'GB/s':>6s}")
    for step in runs[0]:
        values = [run[step] for run in runs]
        first, later = values[0], statistics.median(values[1:]) if len(values) > 1 else float("nan")
        print(f"{step:20s} {first:8.3f} {size / first / 1e9:6.2f} {later:15.3f} {size / later / 1e9:6.2f}")


if __name__ == "__main__":
    main()
