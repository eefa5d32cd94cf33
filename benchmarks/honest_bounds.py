"""What honest sites send: the largest update-norm ratio and num-examples claim in finished federated runs.

The coordinator's default bounds (``federation.max_update_norm_ratio``, ``federation.max_examples_per_site``) were
set from this table times a margin (docs/trust-bounds.md). Every ``rounds.jsonl`` under the given folders counts;
a run with a hostile site (injected faults) should not be among them: only kept updates are read, but a bound
derived from a run is only as honest as its sites.

Run: ``python benchmarks/honest_bounds.py runs/demo runs/evidence`` (after ``make demo`` and ``make evidence``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def honest_figures(paths: list[Path]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (run folder, phase): kept updates, the largest and the median norm ratio, the largest claim."""
    norms: dict[tuple[str, str], list[float]] = defaultdict(list)
    claims: dict[tuple[str, str], list[float]] = defaultdict(list)
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") != "train":
                continue
            key = (str(path.parent), str(record["phase"]))
            for site in record["sites"]:
                norms[key].append(float(site["update_norm_ratio"]))
                claims[key].append(float(site["num-examples"]))
    return {
        key: {"updates": len(values), "max_ratio": max(values), "median_ratio": sorted(values)[len(values) // 2],
              "max_claim": max(claims[key])}
        for key, values in sorted(norms.items())
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of finished runs (searched for rounds.jsonl)")
    args = parser.parse_args(argv)
    paths = sorted(p for folder in args.folders for p in folder.rglob("rounds.jsonl"))
    if not paths:
        print(f"no rounds.jsonl under {', '.join(map(str, args.folders))}", file=sys.stderr)
        return 1
    figures = honest_figures(paths)
    print(f"{'run':<60} {'phase':<9} {'updates':>7} {'max ratio':>10} {'median':>8} {'max claim':>9}")
    for (run, phase), row in figures.items():
        print(f"{run[-60:]:<60} {phase:<9} {row['updates']:>7d} {row['max_ratio']:>10.4f} "
              f"{row['median_ratio']:>8.4f} {row['max_claim']:>9.0f}")  # fmt: skip
    top_ratio = max(row["max_ratio"] for row in figures.values())
    top_claim = max(row["max_claim"] for row in figures.values())
    print(f"\nlargest honest norm ratio {top_ratio:.4f}; largest honest num-examples {top_claim:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
