"""Per-round overhead of an endofed federation in deployment mode, beside a pure-echo baseline of the same bytes.

One SuperLink and N SuperNodes (default 3) on 127.0.0.1, no Ray, state in a database file. Two runs of R rounds
with the same encoder (default: configs/default.yaml, ViT-B size):
  echo     the ClientApp returns the arrays it received (Flower's own cost: process start, transport, polling)
  endofed  the real ClientApp: site data check, model build, local state load/save, training, encode
From the per-site timings the ClientApps report (t-startup, t-site, t-decode, t-local, t-encode, train-seconds)
and the server's round log, it prints per round: round time, training time, endofed's extra time over echo, and
the bytes down/up per site. It then projects the overhead as a share of a round for 1, 5 and 20 local epochs of
100 volumes, given a GPU epoch time (--gpu-epoch-s, an assumption: this machine has no GPU).

Usage: python benchmarks/federation_overhead.py [--sites 3] [--rounds 3] [--config configs/default.yaml]
           [--subjects 4] [--transport fp32|bf16] [--gpu-epoch-s 0.5]
Takes minutes on a CPU machine (a ViT-B local step on CPU is slow; training time is reported and subtracted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from endofed.federated.runconfig import CONFIG_OVERRIDES, CONFIG_PATH, ECHO, NODE_SITE_CONFIG, OUTPUT_DIR
from endofed.launch.flwr import env_path_with_venv, flower_binary, flwr_run, last_run_status, write_connection
from endofed.launch.processes import Child, flower_env, free_port, wait_for_port
from endofed.synth.cohort import generate
from endofed.synth.profile import load_preset

ROOT = Path(__file__).resolve().parents[1]
CONNECTION = "bench"


def make_sites(out: Path, count: int, subjects: int) -> list[Path]:
    """``count`` small synthetic sites (demo3 protocols, all labelled) at tiny scale."""
    presets = load_preset("demo3")
    sites = []
    for index in range(count):
        base = presets[index % len(presets)]
        cohort = dataclasses.replace(base.cohort, subjects=subjects, labelled_fraction=1.0)
        sites.append(dataclasses.replace(base, name=f"site{index}", cohort=cohort))
    return generate(sites, out, "tiny", seed=0)


def run_once(root: Path, site_yamls: list[Path], run_config: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """One deployment-mode run; returns its wall time and the server's round records."""
    out = Path(run_config[OUTPUT_DIR])
    env = env_path_with_venv(flower_env(out / "flwr-home"))
    port = free_port()
    write_connection(out / "flwr-home", CONNECTION, f"127.0.0.1:{port}")
    command = [flower_binary("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
               "--database", str(out / "link.db"), "--disable-runtime-dependency-installation"]  # fmt: skip
    superlink = Child("SuperLink", command, out / "superlink.log", env)
    nodes: list[Child] = []
    try:
        wait_for_port(superlink, port)
        for index, site_yaml in enumerate(site_yamls):
            command = [flower_binary("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                       "--node-config", f'{NODE_SITE_CONFIG}="{site_yaml}"', "--port", str(free_port())]  # fmt: skip
            nodes.append(Child(f"SuperNode {index}", command, out / f"supernode{index}.log", env))
        started = time.perf_counter()
        flwr_run(ROOT, CONNECTION, run_config, env)
        wall = time.perf_counter() - started
        run_id, status = last_run_status(CONNECTION, env)
        if status != "finished:completed":
            raise SystemExit(f"run {run_id} ended {status}; see {out}")
    finally:
        for child in [*nodes, superlink]:
            child.stop()
    records = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    return wall, [r for r in records if r["event"] == "train"]


def median(values: list[float]) -> float:
    """Median, 0 for an empty list."""
    return statistics.median(values) if values else 0.0


def report(echo: list[dict[str, Any]], ours: list[dict[str, Any]], gpu_epoch_s: float) -> None:
    """Print the per-round table and the projected overhead shares."""
    header = ("round", "echo s", "endofed s", "train s", "extra s", "MB down", "MB up")
    print("\n" + " ".join(f"{h:>9s}" for h in header))
    extras = []
    for e, o in zip(echo, ours, strict=False):
        train = max(s.get("train-seconds", 0.0) for s in o["sites"])
        extra = o["round_seconds"] - train - e["round_seconds"]
        extras.append(extra)
        site = o["sites"][0]
        row = (e["round_seconds"], o["round_seconds"], train, extra, site["bytes_down"] / 1e6, site["bytes_up"] / 1e6)
        print(f"{o['round']:9d} " + " ".join(f"{v:9.1f}" for v in row))
    keys = ("t-startup", "t-site", "t-decode", "t-local", "train-seconds", "t-encode")
    print("\nper site, median over rounds and sites (s): " + ", ".join(
        f"{k} {median([s.get(k, 0.0) for r in ours for s in r['sites']]):.2f}" for k in keys))  # fmt: skip
    echo_round, extra = median([r["round_seconds"] for r in echo]), median(extras)
    print(f"\nmedian echo round {echo_round:.1f} s; endofed adds {extra:.1f} s beyond training "
          f"({extra / echo_round:+.0%} of the echo round; target <= +20%)")  # fmt: skip
    print(f"projected with a GPU epoch of 100 volumes = {gpu_epoch_s:.2f} s (assumption, --gpu-epoch-s):")
    for epochs in (1, 5, 20):
        round_s = echo_round + extra + epochs * gpu_epoch_s
        print(
            f"  {epochs:2d} local epochs: round {round_s:.1f} s, of which overhead {(echo_round + extra) / round_s:.0%}"
        )


def main() -> None:
    """Set up sites, run echo and endofed, print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=4, help="subjects per site (1 test patient is held out)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--transport", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--gpu-epoch-s", type=float, default=0.5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="endofed-fed-overhead-"))
    try:
        site_yamls = make_sites(root / "data", args.sites, args.subjects)
        for path in site_yamls:  # CPU here; every site reads its own YAML
            site = yaml.safe_load(path.read_text()) | {"device": "cpu"}
            path.write_text(yaml.safe_dump(site))
        overrides = [f"federation.pretrain_rounds={args.rounds}", "federation.finetune_rounds=0",
                     f"federation.min_sites={args.sites}", "pretrain.batch_size=2", "finetune.epochs=1",
                     f"federation.transport={args.transport}", "federation.local_epochs=1"]  # fmt: skip
        results = {}
        for mode in ("echo", "endofed"):
            run_config = {CONFIG_PATH: args.config, CONFIG_OVERRIDES: ";".join(overrides),
                          OUTPUT_DIR: str(root / mode), ECHO: mode == "echo"}  # fmt: skip
            wall, records = run_once(root, site_yamls, run_config)
            print(f"{mode}: {args.rounds} rounds in {wall:.0f} s")
            results[mode] = records
        report(results["echo"], results["endofed"], args.gpu_epoch_s)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
