"""Faults injected into real deployments on 127.0.0.1 (TLS, SuperNode authentication, real processes).

* The coordinator (endofed-server, its SuperLink and ServerApp) is killed with SIGKILL in the middle of a round
  and resumed with ``endofed-server --resume``; the final global encoder equals that of an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from endofed.io.checkpoint import load_checkpoint
from tests.deploy_kit import (
    Federation,
    group_alive,
    jsonl,
    kill_group_from_pidfile,
    make_federation,
    start,
    start_client,
    stop,
    tail,
    wait_for,
)

RESUME_RUN = ("federation.strategy=fedadam", "federation.pretrain_rounds=3", "federation.finetune_rounds=1")


def _subjects(fed: Federation, name: str, out: Path) -> list[dict]:
    """The site-local record of the rounds a site trained in the run whose folder is ``out``."""
    work_dir = Path(yaml.safe_load(fed.sites[name].read_text())["work_dir"])
    if not work_dir.is_absolute():
        work_dir = fed.sites[name].parent / work_dir
    run_key = json.loads((out / "launch.json").read_text())["run_key"]
    return jsonl(work_dir / "federation" / run_key / "subjects.jsonl")


def _run(fed: Federation, out_name: str, crash: bool) -> dict:
    """One run with two sites; with ``crash``, the coordinator is killed mid-round and resumed."""
    config = fed.root / f"{out_name}.yaml"
    server = yaml.safe_load(fed.server_yaml.read_text()) | {"output_dir": out_name}
    config.write_text(yaml.safe_dump(server))
    out = fed.root / out_name
    clients = [start_client(fed, name, f"{out_name}_client_{name}") for name in fed.sites]
    log = fed.root / f"{out_name}_server.log"
    info: dict = {}
    try:
        process = start(["endofed-server", "--config", str(config)], log)
        if crash:
            state = out / "server_state.json"
            wait_for(lambda: state.exists() and json.loads(state.read_text())["round"] >= 1, 400, "round 1")
            # Mid-round 2: once a site has finished its local round 2, the server is still waiting for the other.
            wait_for(lambda: any(r["round"] == 2 for n in fed.sites for r in _subjects(fed, n, out)), 300, "round 2")
            info["killed_after"] = json.loads(state.read_text())["round"]
            superlink = kill_group_from_pidfile(out / "superlink.pid")  # SuperLink, SuperExec, ServerApp
            process.kill()  # endofed-server itself
            process.wait(timeout=30)
            killed = time.monotonic()
            wait_for(lambda: not group_alive(superlink), 30, "the killed SuperLink's processes to go")
            process = start(["endofed-server", "--resume", str(out)], log)
            code = process.wait(timeout=600)
            info["recovery_s"] = time.monotonic() - killed
        else:
            code = process.wait(timeout=600)
        assert code == 0, tail(log)
    finally:
        for client in clients:
            stop(client)
    info["encoder"], _ = load_checkpoint(out / "global_encoder_finetune.safetensors")
    info["summary"] = json.loads((out / "summary.json").read_text())
    info["rounds"] = jsonl(out / "rounds.jsonl")
    info["subjects"] = {name: _subjects(fed, name, out) for name in fed.sites}
    return info


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return make_federation(tmp_path_factory.mktemp("resume"), ["alpha", "beta"], RESUME_RUN)


@pytest.mark.slow
def test_a_coordinator_killed_mid_round_resumes_to_the_same_encoder_bitwise(two_sites):
    reference = _run(two_sites, "reference", crash=False)
    resumed = _run(two_sites, "crashed", crash=True)
    print(f"coordinator killed after round {resumed['killed_after']}; run done {resumed['recovery_s']:.0f} s later")
    assert resumed["summary"]["resumed_after"]["phase"] == "pretrain"
    # The round log survives the crash: every round once (the interrupted one was never aggregated), then on.
    trained = [("pretrain", 1), ("pretrain", 2), ("pretrain", 3), ("finetune", 1)]
    assert [(r["phase"], r["round"]) for r in reference["rounds"] if r["event"] == "train"] == trained
    assert [(r["phase"], r["round"]) for r in resumed["rounds"] if r["event"] == "train"] == trained
    assert [r["round"] for r in resumed["rounds"] if r["event"] == "resume"] == [resumed["killed_after"]]
    # FedAdam's moments, the round numbers and every site's local state carried over: the same bits at the end.
    assert reference["encoder"].keys() == resumed["encoder"].keys()
    assert all(torch.equal(reference["encoder"][k], resumed["encoder"][k]) for k in reference["encoder"])
    ref_metrics = sorted(json.dumps(m, sort_keys=True) for m in reference["summary"]["sites"].values())
    assert ref_metrics == sorted(json.dumps(m, sort_keys=True) for m in resumed["summary"]["sites"].values())
    # Killed while the server waited for round 2: the site that had finished it ran it again (from its previous
    # state, or the encoders above would differ).
    repeated = {n: [(r["phase"], r["round"]) for r in rs] for n, rs in resumed["subjects"].items()}
    if resumed["killed_after"] == 1:
        assert any(len(rounds) > len(set(rounds)) for rounds in repeated.values()), repeated
