"""How the coordinator scales with the number of sites: round time, aggregation time and peak server RSS vs N.

Simulation (default): for each N (default 3, 10, 30, 100) one ``endofed-sim`` run
(:func:`endofed.launch.simulation.run_simulation`: the real ServerApp under Flower's Ray engine), two variants:
  tiny       configs/tiny.yaml, the real ClientApp, a few tiny synthetic volumes per site (sites train).
  echo-vits  a ViT-S encoder (embed 384, depth 12, 6 heads, ~88 MB fp32) and the tests' instrumented ClientApp
             in echo mode (``tests/instrumented_client.py``: as many bytes back as a real reply, no training).
From the server's ``rounds.jsonl``: median ``round_seconds`` and ``aggregation_seconds`` over the train rounds
after the first (round 1 includes Ray actor start and torch imports). A sampler thread reads /proc every 0.2 s:
this run's SuperLink (the ``flower-superlink`` naming this run's database) and, among its descendants, the
``flwr-simulation`` process, which runs the ServerApp and the Ray driver (the actors are other processes). Its
peak is the kernel's high-water mark ``VmHWM`` (exact); "private" is the sampled peak of ``RssAnon``, its own
heap without the shared pages of Ray's object store; "shm" (``RssShmem``, those shared pages it touched) and
"files" (``RssFile``, its mapped libraries) are the other two parts, sampled. ``--rss-limit-gb`` kills the
ServerApp process (by PID) above that RSS, so a sweep cannot exhaust a shared machine; that N is then reported
as aborted.

Deployment (``--deployment 2 4 8``): K real ``endofed-client`` SuperNodes and ``endofed-server`` on 127.0.0.1
with TLS and SuperNode authentication (``tests/deploy_kit.py``), tiny model: rounds completed, median round
time, round time per added site, peak RSS of ``flwr-serverapp``.

Usage: python benchmarks/federation_scale.py [--sites 3 10 30 100] [--rounds 3] [--variant tiny|echo-vits|both]
           [--out DIR] [--plot docs/federation-scale.png] [--before OLD/results.json] [--deployment 2 4 8]
           [--in-flight W] [--object-store-mb MB]
The defaults are endofed-sim's: a send window of one more site than run at once, Ray's object store bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the instrumented app and the deployment kit live with the tests
from benchmarks.federation_overhead import make_sites  # noqa: E402
from benchmarks.proc_status import argv_of, children, descendants, is_program, status_bytes  # noqa: E402
from benchmarks.scale_report import VARIANTS, Result, deployment_slope, load_results, plot, save, table  # noqa: E402
from endofed.launch.processes import LaunchError  # noqa: E402
from endofed.launch.simulation import DEFAULT_OBJECT_STORE_MB, SimulationRequest, run_simulation  # noqa: E402
from tests.instrumented import build_instrumented_app  # noqa: E402

TINY = ROOT / "configs" / "tiny.yaml"
VITS = ("model.embed_dim=384", "model.depth=12", "model.num_heads=6")
SERVER_PROGRAMS = ("flwr-simulation", "flwr-serverapp")  # the process that runs the ServerApp


class PeakSampler(threading.Thread):
    """Peak RSS of the ServerApp process and of the SuperLink of the run whose database is ``database``."""

    def __init__(self, database: Path, limit_bytes: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.database, self.limit, self.interval = str(database), limit_bytes, interval_s
        self.peaks = {"server": 0, "superlink": 0, "private": 0, "shmem": 0, "file": 0}
        self.aborted = ""
        self._done = threading.Event()

    def _processes(self) -> dict[str, int]:
        """PIDs of this run's SuperLink and ServerApp process (those found)."""
        tree = children()
        pids = [p for ps in tree.values() for p in ps]
        links = [p for p in pids if self.database in argv_of(p) and is_program(p, ("flower-superlink",))]
        if not links:
            return {}
        found = {"superlink": links[0]}
        servers = [p for p in descendants(links[0], tree) if is_program(p, SERVER_PROGRAMS)]
        if servers:
            found["server"] = servers[0]
        return found

    def run(self) -> None:
        """Sample until stopped."""
        while not self._done.wait(self.interval):
            for role, pid in self._processes().items():
                rss = status_bytes(pid, "VmRSS")
                self.peaks[role] = max(self.peaks[role], rss, status_bytes(pid, "VmHWM"))
                if role == "server":  # Ray's object store is shared memory mapped into the driver: counted apart
                    for part, field in (("private", "RssAnon"), ("shmem", "RssShmem"), ("file", "RssFile")):
                        self.peaks[part] = max(self.peaks[part], status_bytes(pid, field))
                if role == "server" and self.limit and rss > self.limit and not self.aborted:
                    self.aborted = f"ServerApp RSS {rss / 1e9:.1f} GB passed --rss-limit-gb; killed PID {pid}"
                    os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """End sampling."""
        self._done.set()
        self.join(timeout=5)


def _trim(site: Path, test_per_class: int) -> None:
    """Keep a site's training subjects and ``test_per_class`` test subjects per label; delete the other volumes."""
    lines = (site / "manifest.csv").read_text().splitlines()
    kept, seen = [lines[0]], dict[str, int]()
    for line in lines[1:]:
        subject, _, _, label, split = line.split(",")
        seen[label] = seen.get(label, 0) + (split == "test")
        if split == "train" or seen[label] <= test_per_class:
            kept.append(line)
        else:
            shutil.rmtree(site / "data" / subject, ignore_errors=True)
    (site / "manifest.csv").write_text("\n".join(kept) + "\n")


def prepare_sites(data: Path, count: int, subjects: int) -> list[Path]:
    """``count`` site YAMLs on CPU over 3 small synthetic sites (demo3 protocols, cut to a few volumes each).

    Virtual site k reads base site k % 3's volumes (read-only) and has its own site id and work folder.
    """
    bases = make_sites(data, 3, subjects)
    yamls = []
    for base in bases:
        _trim(base.parent / yaml.safe_load(base.read_text())["data_root"].split("/")[0], test_per_class=2)
    for k in range(count):
        site = yaml.safe_load(bases[k % 3].read_text())
        site |= {"site_id": f"v{k:03d}", "work_dir": f"work/v{k:03d}", "device": "cpu"}
        path = data / f"virtual_{k:03d}.yaml"
        path.write_text(yaml.safe_dump(site))
        yamls.append(path)
    return yamls


def echo_app(dest: Path) -> Path:
    """The instrumented app with ``echo = true`` as its run-config default (the launcher passes no extra keys)."""
    app = build_instrumented_app(dest)
    pyproject = app / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    if "\necho = false\n" not in text:
        raise RuntimeError("the instrumented app's pyproject.toml no longer has 'echo = false'")
    pyproject.write_text(text.replace("\necho = false\n", "\necho = true\n"), encoding="utf-8")
    return app


def overrides_for(variant: str, sites: int, rounds: int, in_flight: int = 0) -> list[str]:
    """Config overrides: R pre-training rounds, local fine-tuning only, all N sites required, short local work.

    ``in_flight`` > 0: at most that many sites are sent work at once (``federation.max_in_flight``).
    """
    common = [f"federation.pretrain_rounds={rounds}", "federation.finetune_rounds=0", f"federation.min_sites={sites}",
              "federation.local_epochs=1", "pretrain.batch_size=2", "finetune.epochs=1", "finetune.bootstrap=20",
              "finetune.class_weighted=false"]  # fmt: skip
    echo = [*VITS, "federation.max_update_norm_ratio=0"]  # an echo reply is no real update: no norm bound
    window = [f"federation.max_in_flight={in_flight}"] if in_flight else []
    return common + window + (echo if variant == "echo-vits" else [])


def train_records(path: Path) -> list[dict[str, Any]]:
    """The server's ``train`` round records (empty if none)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "train"]


def summarize(result: Result, records: list[dict[str, Any]]) -> Result:
    """Medians over the rounds after the first (all rounds if only one), model size from the bytes sent."""
    result.rounds = len(records)
    if records:
        timed = records[1:] or records
        result.round_s = statistics.median(r["round_seconds"] for r in timed)
        result.aggregation_s = statistics.median(r["aggregation_seconds"] for r in timed)
        result.model_bytes = int(records[0]["sites"][0]["bytes_down"]) if records[0]["sites"] else 0
    return result


def run_sim(variant: str, site_yamls: list[Path], app: Path, out: Path, rounds: int, limit: int,
            in_flight: int = 0, object_store_mb: int = DEFAULT_OBJECT_STORE_MB) -> Result:  # fmt: skip
    """One simulation run with the given sites; never raises for a failed run (the error goes into the result)."""
    shutil.rmtree(out, ignore_errors=True)
    request = SimulationRequest(app, site_yamls, TINY, overrides_for(variant, len(site_yamls), rounds, in_flight), out,
                                log=out / "logs" / "flwr-run.log", object_store_mb=object_store_mb)  # fmt: skip
    sampler = PeakSampler(out / "superlink.db", limit)
    result = Result(variant, len(site_yamls), settings=f"max_in_flight={in_flight} object_store_mb={object_store_mb}")
    started = time.perf_counter()
    sampler.start()
    try:
        run_simulation(request)
    except (LaunchError, OSError, ValueError) as exc:
        result.error = sampler.aborted or str(exc).splitlines()[0][:300]
    finally:
        sampler.stop()
    result.wall_s = time.perf_counter() - started
    result.server_peak, result.superlink_peak = sampler.peaks["server"], sampler.peaks["superlink"]
    result.server_private_peak, result.server_shmem_peak = sampler.peaks["private"], sampler.peaks["shmem"]
    result.server_file_peak = sampler.peaks["file"]
    return summarize(result, train_records(out / "rounds.jsonl"))


def run_deployment(root: Path, count: int, rounds: int) -> Result:
    """K real SuperNodes (endofed-client) and endofed-server with TLS and node authentication, tiny model."""
    from tests.deploy_kit import make_federation, start, start_client, stop

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    names = [f"site{k}" for k in range(count)]
    try:
        fed = make_federation(root, names, (f"federation.pretrain_rounds={rounds}", "federation.finetune_rounds=0",
                                            f"federation.min_sites={count}", "finetune.epochs=1"))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a benchmark reports a failed setup and goes on
        return Result("deploy-tls", count, error=f"setup failed: {exc}")
    sampler = PeakSampler(root / "out" / "superlink.db", 0)
    result, started = Result("deploy-tls", count), time.perf_counter()
    env = {"PYTHONPATH": str(ROOT)}  # this checkout's endofed, also where the venv's editable install points elsewhere
    clients = [start_client(fed, name, extra_env=env) for name in names]
    sampler.start()
    server = start(["endofed-server", "--config", str(fed.server_yaml), "--quiet"], root / "server.log", env)
    try:
        code = server.wait(timeout=3600)
        if code != 0:
            result.error = f"endofed-server exited {code}; see {root / 'server.log'}"
    except subprocess.TimeoutExpired:
        result.error = "endofed-server did not finish in 3600 s"
    finally:
        sampler.stop()
        for process in [server, *clients]:
            stop(process)
    result.wall_s = time.perf_counter() - started
    result.server_peak, result.superlink_peak = sampler.peaks["server"], sampler.peaks["superlink"]
    result.server_private_peak, result.server_shmem_peak = sampler.peaks["private"], sampler.peaks["shmem"]
    result.server_file_peak = sampler.peaks["file"]
    return summarize(result, train_records(root / "out" / "rounds.jsonl"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10, 30, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", choices=[*VARIANTS, "both", "none"], default="both")
    parser.add_argument("--subjects", type=int, default=3, help="training subjects per base site")
    parser.add_argument("--deployment", type=int, nargs="*", default=[], metavar="K", help="e.g. 2 4 8")
    parser.add_argument("--out", type=Path, default=Path("/tmp/endofed-federation-scale"))
    parser.add_argument("--plot", type=Path, help="write the PNG here (e.g. docs/federation-scale.png)")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        metavar="W",
        help="simulation: at most W sites sent work at once (federation.max_in_flight; 0 = endofed-sim's "
        "default, one more than the sites Ray runs at once; W >= N: all at once)",
    )
    parser.add_argument(
        "--object-store-mb",
        type=int,
        default=DEFAULT_OBJECT_STORE_MB,
        metavar="MB",
        help=f"bound on Ray's object store (default {DEFAULT_OBJECT_STORE_MB}; 0: Ray's own)",
    )
    parser.add_argument("--rss-limit-gb", type=float, default=10.0, help="kill the ServerApp above this RSS (0: off)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (default: only results.json)")
    parser.add_argument("--before", type=Path, help="an earlier results.json, drawn dashed in the plot")
    parser.add_argument("--replot", type=Path, help="run nothing: plot this results.json (with --before, --plot)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, print the table, write results.json and the plot."""
    args = parse_args(argv)
    if args.replot:
        if args.plot is None:
            raise SystemExit("--replot needs --plot PATH")
        before = load_results(args.before) if args.before else None
        plot([r for r in load_results(args.replot) if r.variant in VARIANTS], args.plot, before)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.update(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    os.environ.setdefault("RAY_TMPDIR", str(args.out / "ray"))  # Ray's session files stay in the scratch folder
    variants = {"both": VARIANTS, "none": ()}.get(args.variant, (args.variant,))
    results: list[Result] = []
    if variants:
        yamls = prepare_sites(args.out / "data", max(args.sites), args.subjects)
        apps = {"tiny": ROOT, "echo-vits": echo_app(args.out / "echo-app")}
        for variant in variants:
            for n in sorted(args.sites):
                run_dir = args.out / f"{variant}-{n}"
                limit = int(args.rss_limit_gb * 1e9)
                results.append(
                    run_sim(
                        variant,
                        yamls[:n],
                        apps[variant],
                        run_dir,
                        args.rounds,
                        limit,
                        args.in_flight,
                        args.object_store_mb,
                    )
                )
                print(table(results[-1:]).splitlines()[-1], flush=True)
                save(results, args.out)
                if not args.keep:
                    shutil.rmtree(run_dir, ignore_errors=True)
    for k in sorted(args.deployment):
        results.append(run_deployment(args.out / f"deploy-{k}", k, args.rounds))
        print(table(results[-1:]).splitlines()[-1], flush=True)
        if not args.keep:
            shutil.rmtree(args.out / f"deploy-{k}", ignore_errors=True)
    print("\n" + table(results))
    if args.deployment:
        print(deployment_slope(results))
    save(results, args.out)
    if args.plot:
        before = load_results(args.before) if args.before else None
        plot([r for r in results if r.variant in VARIANTS], args.plot, before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
