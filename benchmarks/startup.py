"""Start-up cost: ``--help`` of the CLI, the Flower apps' imports, and a site's load step (cold and warm cache).

In deployment Flower starts a fresh ClientApp process for every message, so what a site pays per round is an
interpreter start, ``import client.app`` and ``load_cohort`` with a warm cache. Every figure here is the median
(and range) of ``--runs`` runs, each in a fresh interpreter:

  endofed --help, endofed data --help, endofed compare --help   whole process (interpreter start included)
  import client.app, import server.app                          whole process
  load_cohort cold / warm                                        the call alone, in a fresh process; cold = empty
                                                                 work dir (every case preprocessed), warm = the
                                                                 next process on the same work dir
  its process                                                    the whole process (the warm one: what a site
                                                                 pays per Flower message before training)

``--tree DIR`` (repeatable; default: this repository) names the source tree measured (``PYTHONPATH=DIR``, run
from DIR); with several trees the runs are interleaved, so a busy machine slows all of them alike. The site is
``endofed synth --preset tiny`` (made by the first tree, into a temporary folder) unless ``--site-dir`` names
the output of an earlier ``endofed synth``; every tree loads the same files.

Usage: python benchmarks/startup.py [--tree DIR ...] [--runs 5] [--site-dir DIR] [--site NAME]
Prints figures; run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = "bench-work"  # the measured work dirs, inside the site folder (removed at the end)
SETTLE_S = 2.5  # source files newer than this are hashed again at every start-up (endofed.data.cache.RACY_NS)

HELP = {
    "endofed --help": ["--help"],
    "endofed data --help": ["data", "--help"],
    "endofed compare --help": ["compare", "--help"],
}
IMPORTS = {"import client.app": "import client.app", "import server.app": "import server.app"}
LOAD = """
import json, sys, time
t0 = time.perf_counter()
from endofed.config import load_config, load_site_config
from endofed.training.cohort import load_cohort
t1 = time.perf_counter()
cohort = load_cohort(load_site_config(sys.argv[1]), load_config(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "cases": len(cohort.cases)}))
"""


def _env(tree: Path) -> dict[str, str]:
    """The environment of a measured process: only ``tree`` on the path, Flower's network calls off."""
    return {**os.environ, "PYTHONPATH": str(tree), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def _run(tree: Path, args: list[str]) -> tuple[float, str]:
    """Run ``python ARGS`` from ``tree``; wall seconds and stdout (raises with stderr on failure)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=tree, env=_env(tree), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{args} in {tree} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def _synth(tree: Path, out: Path, scale: str) -> None:
    """``endofed synth --preset tiny --scale SCALE --out OUT`` with ``tree``'s code."""
    _run(tree, ["-m", "endofed.cli.main", "synth", "--preset", "tiny", "--scale", scale, "--out", str(out)])


def _site_copy(site_yaml: Path, work_dir: str) -> Path:
    """A copy of a site YAML (next to it, so its relative paths hold) with its own ``work_dir``."""
    lines = [
        f"work_dir: {work_dir}" if line.startswith("work_dir:") else line
        for line in site_yaml.read_text(encoding="utf-8").splitlines()
    ]
    copy = site_yaml.with_name(f".bench-{work_dir.replace('/', '-')}.yaml")
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return copy


def _settle(site_dir: Path) -> None:
    """Wait until every source file is older than the racy-timestamp window (as real site data is)."""
    newest = max(p.stat().st_ctime for p in site_dir.rglob("*") if p.is_file())
    time.sleep(max(0.0, newest + SETTLE_S - time.time()))


def _load(tree: Path, site_yaml: Path) -> tuple[float, float]:
    """Seconds of one ``load_cohort`` call in a fresh process (the tree's tiny config), and of the process."""
    wall, out = _run(tree, ["-c", LOAD, str(site_yaml), str(tree / "configs" / "tiny.yaml")])
    return float(json.loads(out.strip().splitlines()[-1])["load_s"]), wall


def measure(trees: list[Path], runs: int, site_yaml: Path) -> dict[str, dict[Path, list[float]]]:
    """Every figure for every tree, ``runs`` times, interleaved over the trees."""
    figures: dict[str, dict[Path, list[float]]] = {}

    def add(name: str, tree: Path, seconds: float) -> None:
        figures.setdefault(name, {}).setdefault(tree, []).append(seconds)

    jobs: dict[str, Callable[[Path], float]] = {}
    for name, argv in HELP.items():
        jobs[name] = lambda tree, argv=argv: _run(tree, ["-m", "endofed.cli.main", *argv])[0]
    for name, statement in IMPORTS.items():
        jobs[name] = lambda tree, statement=statement: _run(tree, ["-c", statement])[0]
    for run in range(runs):
        for name, job in jobs.items():
            for tree in trees:
                add(name, tree, job(tree))
        for index, tree in enumerate(trees):
            site = _site_copy(site_yaml, f"{WORK}/t{index}-r{run}")
            cold, process = _load(tree, site)
            add("load_cohort cold (1st call)", tree, cold)
            add("  its whole process", tree, process)
            warm, process = _load(tree, site)
            add("load_cohort warm (2nd call)", tree, warm)
            add("  its whole process (per message)", tree, process)
        print(f"run {run + 1}/{runs} done", file=sys.stderr)
    return figures


def report(figures: dict[str, dict[Path, list[float]]], trees: list[Path]) -> str:
    """One row per figure: median [min..max] seconds for each tree."""
    width = max(len(name) for name in figures)
    head = f"{'seconds, median [min..max]':<{width}}" + "".join(f"  {str(t):>26}" for t in trees)
    rows = [head, "-" * len(head)]
    for name, by_tree in figures.items():
        cells = []
        for tree in trees:
            values = by_tree[tree]
            cells.append(f"{statistics.median(values):7.2f} [{min(values):.2f}..{max(values):.2f}]")
        rows.append(f"{name:<{width}}" + "".join(f"  {cell:>26}" for cell in cells))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse, prepare the site, measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="source tree to measure (repeatable)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--site-dir", type=Path, help="output of 'endofed synth' to load (default: synthesised)")
    parser.add_argument("--site", default="alpha", help="site of --site-dir to load (default alpha)")
    parser.add_argument("--scale", choices=("tiny", "full"), default="tiny", help="of the synthesised site")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [REPO])]
    temporary = Path(tempfile.mkdtemp(prefix="endofed-startup-")) if args.site_dir is None else None
    site_dir = temporary / "synth" if temporary is not None else args.site_dir.resolve()
    try:
        if temporary is not None:
            _synth(trees[0], site_dir, args.scale)
        _settle(site_dir)
        sources = [p for p in (site_dir / args.site).rglob("*.nii*") if "truth" not in p.parts]
        megabytes = sum(p.stat().st_size for p in sources) / 1e6
        figures = measure(trees, args.runs, site_dir / f"site_{args.site}.yaml")
    finally:
        shutil.rmtree(temporary or site_dir / WORK, ignore_errors=True)
        for copy in site_dir.glob(".bench-*.yaml"):
            copy.unlink(missing_ok=True)
    load = os.getloadavg()
    print(f"{args.runs} runs each, fresh process per run; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"site {args.site}: {len(sources)} source files, {megabytes:.1f} MB (a warm call before hashed all of it)")
    print(report(figures, trees))
    return 0


if __name__ == "__main__":
    sys.exit(main())
