"""What SecAgg+ costs for the encoder upload: Flower's SecAgg+ (legacy API path) vs plain FedAvg, same bytes.

Flower 1.42 offers secure aggregation only on its legacy API (NumPyClient + ``secaggplus_mod`` at the sites,
``LegacyContext`` + ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` at the server); endofed's apps
use the Message API. This benchmark runs a minimal legacy app (``benchmarks/secagg_cost/``) under the
simulation engine with N sites that each return the received weights plus a known offset, with and without
SecAgg+, for arrays of the sizes given, and prints the median round time and the aggregation error (SecAgg+
quantises the weights: ``clipping_range`` 8, ``quantization_range`` 2**22 by default).

Usage: python benchmarks/secagg_cost.py [--params 477000 86000000] [--sites 3] [--rounds 3]
(477k: the tiny config's encoder; 86M: a ViT-B encoder.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from endofed.launch.flwr import env_path_with_venv, flower_binary, flwr_run, last_run_status, write_connection
from endofed.launch.processes import Child, flower_env, free_port, wait_for_port

APP = Path(__file__).resolve().parent / "secagg_cost"


def run(root: Path, params: int, sites: int, rounds: int, secagg: bool) -> dict:
    """One simulated run; returns the app's result (round times, max error) plus the wall time."""
    out = root / f"{'secagg' if secagg else 'plain'}-{params}"
    out.mkdir(parents=True)
    env = env_path_with_venv(flower_env(out / "flwr-home"))
    port = free_port()
    write_connection(out / "flwr-home", "bench", f"127.0.0.1:{port}")
    command = [flower_binary("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1", "--port",
               str(port), "--disable-runtime-dependency-installation", "--database", str(out / "link.db")]  # fmt: skip
    superlink = Child("SuperLink", command, out / "superlink.log", env)
    try:
        wait_for_port(superlink, port)
        started = time.perf_counter()
        config = {"num-params": params, "rounds": rounds, "secagg": secagg, "sites": sites,
                  "result": str(out / "result.json")}  # fmt: skip
        flwr_run(APP, "bench", config, env, out / "flwr.log", {"num-supernodes": sites}, quiet=True)
        wall = time.perf_counter() - started
        run_id, status = last_run_status("bench", env)
    finally:
        superlink.stop()
    if status != "finished:completed":
        raise SystemExit(f"run {run_id} ended {status}; see {out}")
    return json.loads((out / "result.json").read_text()) | {"wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, nargs="+", default=[477_000, 86_000_000])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="endofed-secagg-"))
    try:
        print(f"{'params':>11s} {'MB fp32':>8s} {'plain s/round':>14s} {'SecAgg+ s/round':>16s} {'ratio':>6s} "
              f"{'SecAgg+ max error':>18s}")  # fmt: skip
        for params in args.params:
            plain = run(root, params, args.sites, args.rounds, secagg=False)
            secure = run(root, params, args.sites, args.rounds, secagg=True)
            p, s = statistics.median(plain["round_seconds"]), statistics.median(secure["round_seconds"])
            print(
                f"{params:11d} {params * 4 / 1e6:8.1f} {p:14.2f} {s:16.2f} {s / p:6.1f} {secure['max_abs_error']:18.2e}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
