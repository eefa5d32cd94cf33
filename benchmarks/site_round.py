"""A site's own work per federated round, each round in a fresh process as in deployment, without Flower's transport.

Deployment starts a fresh ClientApp process for every message, so a site pays per round: the interpreter and the
imports, then the handler (site config and data check against the cache, decoding the received encoder, model
build, local state load, training, encoding the reply), then the state save. This benchmark plays the coordinator in
this process (the real down-link, :class:`endofed.federated.downlink.DownLink`, one site, FedAvg of one = the site's
reply) and runs every round's real ClientApp handler (``client.app:app``, its mods included) in a fresh
``python`` process, so nothing is warm that would not be warm at a site. It prints per round:

  import      interpreter start -> ``import client.app`` done (torch and flwr: any PyTorch ClientApp pays them;
              ``--baseline`` measures a process importing only torch and flwr, for endofed's own share)
  site        site config, data check against the cache, splits (the handler's ``t-site``)
  decode      the received encoder to float32 (a delta against the kept base) and its digest check
  local       model build, state load, checks (and the state save if not deferred), minus the training itself
  train       the training epochs (``train-seconds``; not overhead)
  encode      the reply in its codec
  audit       the mods around the handler (outgoing audit), i.e. handler call minus the handler's own timers
  own         site + decode + local + encode + audit: endofed's work beyond training and start-up, before the reply
  after       the round's state commit, after the reply (a deployed site: ``endofed.training.commits``)
  own+after   all of endofed's work in the round's process beyond training and start-up

``--profile`` also prints the top functions (cumulative) of the last round's handler, from cProfile.

Usage: python benchmarks/site_round.py [--config configs/tiny.yaml] [--rounds 4] [--transport delta_int8]
           [--subjects 4] [--baseline] [--profile]
Run by hand; prints figures (medians over rounds 2..R: round 1 builds the site's first state and checks its data).
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
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.federation_overhead import make_sites  # noqa: E402

NODE_ID, RUN_ID = 7, 11
COLUMNS = ("import", "site", "decode", "local", "train", "encode", "audit", "own", "after", "own+after")


def child(job: Path) -> None:
    """One round at the site, in this fresh process: the real ClientApp on the message the parent wrote."""
    import cProfile
    import pstats

    spec = json.loads((job / "job.json").read_text())
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from client.app import app as client_app
    from client.app import process_age_s

    imported = process_age_s()
    arrays = {k: Array(v) for k, v in load_file(str(job / "payload.safetensors")).items()}  # packed, as sent
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, NODE_ID, 1
    content = RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(spec["config"])})
    msg = Message(content=content, message_type=MessageType.TRAIN, dst_node_id=NODE_ID)
    context = Context(run_id=RUN_ID, node_id=NODE_ID, node_config={"site-config": spec["site"]},
                      state=RecordDict(), run_config=spec["run_config"])  # fmt: skip  # as a deployed node
    profile = cProfile.Profile() if spec["profile"] else None
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    reply = client_app(msg, context)
    if profile is not None:
        profile.disable()
    handled = time.perf_counter() - started
    from client.app import _SITES

    for site in _SITES.values():  # deployed: the round's state is committed after the reply (Flower's exit waits)
        site.wait_for_commits()
    after = time.perf_counter() - started - handled
    if reply.has_error():
        raise SystemExit(f"round {spec['config']['server-round']}: {reply.error.code} {reply.error.reason}")
    metrics = dict(reply.content["metrics"])
    save_file({k: v.numpy() for k, v in reply.content["arrays"].items()}, str(job / "reply.safetensors"))
    loaded = "torch._dynamo" in sys.modules  # torch's compiler stack (endofed.eager avoids it)
    timings = {"import": imported, "handled": handled, "after": after, "dynamo": loaded, **metrics}
    (job / "timings.json").write_text(json.dumps(timings))
    if profile is not None:
        profile.dump_stats(str(job / "handler.pstats"))
        stats = pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative")
        print(f"\nround {spec['config']['server-round']}'s handler, endofed's and safetensors' calls (cumulative):")
        stats.print_stats(r"endofed|client/app|safetensors|hashlib|_dynamo/__init__", 40)


def row(t: dict[str, float]) -> dict[str, float]:
    """The columns of one round from the child's timings."""
    timed = t["t-site"] + t["t-decode"] + t["t-local"] + t["t-encode"]
    values = {
        "import": t["import"], "site": t["t-site"], "decode": t["t-decode"],
        "local": t["t-local"] - t["train-seconds"], "train": t["train-seconds"], "encode": t["t-encode"],
        "audit": max(0.0, t["handled"] - timed),
    }  # fmt: skip
    values["own"] = sum(values[k] for k in ("site", "decode", "local", "encode", "audit"))
    values["after"] = t["after"]
    values["own+after"] = values["own"] + values["after"]
    values["dynamo"] = float(t["dynamo"])
    return values


def baseline_import(runs: int = 3) -> float:
    """Median seconds of a fresh process that imports torch and Flower's ClientApp API only."""
    code = "import torch, flwr.app, flwr.clientapp"
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Play the coordinator; run every round's handler in a fresh process; print the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--transport", default="delta_int8", choices=("fp32", "delta_int8"))
    parser.add_argument("--baseline", action="store_true", help="also time a process importing torch + flwr only")
    parser.add_argument("--profile", action="store_true", help="cProfile the last round's handler")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: run one round in this process
    args = parser.parse_args()
    if args.job:
        child(Path(args.job))
        return
    from endofed.config import load_config
    from endofed.federated.bytes import from_transport, link_modes, payload_layout
    from endofed.federated.downlink import DownLink
    from endofed.federated.packing import pack, unpack
    from endofed.federated.weights import encoder_state
    from endofed.models import build_mae

    root = Path(tempfile.mkdtemp(prefix="endofed-site-round-"))
    try:
        site_yaml = make_sites(root / "data", 1, args.subjects)[0]
        site = yaml.safe_load(site_yaml.read_text()) | {"device": "cpu"}
        site_yaml.write_text(yaml.safe_dump(site))
        overrides = ["pretrain.batch_size=2", "federation.local_epochs=1", f"federation.transport={args.transport}"]
        cfg = load_config(args.config, overrides)
        master = {k: v.numpy() for k, v in encoder_state(build_mae(cfg.model, cfg.data.roi_size)).items()}
        shapes = {k: v.shape for k, v in master.items()}
        run_config = {"config-path": str(Path(args.config).resolve()), "config-overrides": ";".join(overrides),
                      "site-configs": str(site_yaml), "output-dir": "", "run-key": "bench"}  # fmt: skip
        link, rows = DownLink(), []
        for server_round in range(1, args.rounds + 1):
            outgoing = link.advance(master).for_node(NODE_ID) if args.transport == "delta_int8" else None
            config: dict[str, Any] = {"phase": "pretrain", "server-round": server_round, "total-rounds": args.rounds,
                                      "local-epochs": 1, "transport": args.transport}  # fmt: skip
            payload = master
            if outgoing is not None:
                payload = {k: np.ascontiguousarray(v) for k, v in outgoing.payload.items()}
                config |= {"down-codec": outgoing.mode, "view-digest": outgoing.view_digest}
                if outgoing.base_digest is not None:
                    config["base-digest"] = outgoing.base_digest
            job = root / f"round-{server_round}"
            job.mkdir()
            save_file(pack(payload), str(job / "payload.safetensors"))
            profile = args.profile and server_round == args.rounds
            spec = {"config": config, "run_config": run_config, "profile": profile, "site": str(site_yaml)}
            (job / "job.json").write_text(json.dumps(spec))
            subprocess.run([sys.executable, __file__, "--job", str(job)], check=True, cwd=ROOT,
                           env=os.environ | {"PYTHONPATH": str(ROOT)})  # fmt: skip
            timings = json.loads((job / "timings.json").read_text())
            rows.append(row(timings))
            received = link.view if outgoing is not None else master  # what the site decoded
            up = link_modes(args.transport)[1]
            reply = unpack(load_file(str(job / "reply.safetensors")), payload_layout(shapes, up))
            master = from_transport(reply, up, received)
            if outgoing is not None:
                link.confirm(NODE_ID)
        print(f"\n{Path(args.config).name}, transport {args.transport}, seconds per round (fresh process each):")
        print("round " + " ".join(f"{c:>9s}" for c in COLUMNS) + "  torch._dynamo imported")
        for index, values in enumerate(rows, start=1):
            print(f"{index:5d} " + " ".join(f"{values[c]:9.2f}" for c in COLUMNS) + f"  {bool(values['dynamo'])}")
        later = rows[1:] or rows
        print("median" + " ".join(f"{statistics.median(r[c] for r in later):9.2f}" for c in COLUMNS) + "  (rounds 2..)")
        if args.baseline:
            print(f"a process importing torch + flwr only: {baseline_import():.2f} s (interpreter start included)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
