"""Faults injected into real deployments on 127.0.0.1 (TLS, SuperNode authentication, real processes).

* The coordinator (endofed-server, its SuperLink and ServerApp) is killed with SIGKILL in the middle of a round
  and resumed with ``endofed-server --resume``; the final global encoder equals that of an uninterrupted run.
* One of three sites is killed mid-run: the round completes without it (quorum 2) within the heartbeat timeout,
  the next rounds wait a bounded time for it, and once restarted it rejoins with its local state.
* A site sends a NaN, a renamed key, a short array, float64 arrays, a 1000x update, a 1000x num-examples, a path
  as a metric key, a list metric, no arrays, text and uint8 arrays, a config record, and (evaluate) no metrics and
  a NaN AUC over 10^9 patients, and raises an exception naming a subject and a path: each reply is rejected and
  logged (the exception as a fixed error), the two honest sites are averaged, the run completes under the default
  bounds, and the exception's text is in the site's log only.

The closing notes quote the times these tests print (``pytest -s``).
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from endofed.io.checkpoint import load_checkpoint
from tests.deploy_kit import (
    TELEMETRY_ON,
    Federation,
    budget_s,
    flower_privacy_env,
    group_alive,
    jsonl,
    kill_group_from_pidfile,
    make_federation,
    start,
    start_client,
    stop,
    stop_budget_s,
    tail,
    wait_for,
)
from tests.instrumented import build_instrumented_app

pytestmark = pytest.mark.integration

# Each wait's deadline (s). A test's timeout is the sum of the waits it can make (deploy_kit.budget_s), so a slow
# machine fails a wait, with what it waited for, before pytest's cap; see the timeout of each test.
ROUND_S = 400  # the coordinator to finish a round (server_state.json or rounds.jsonl shows it)
SITE_ROUND_S = 300  # a site to finish its part of a round
GONE_S = 30  # a SIGKILLed process (group) to be gone
RUN_S = 600  # endofed-server to exit after its last (re)start
HOSTILE_RUN_S = 1500  # the same for 16 rounds, 15 with a hostile reply, and a SuperNode restarted until it joins

# int8 both ways: the down-link's view and holders are part of the state a resumed coordinator must restore
RESUME_RUN = ("federation.strategy=fedadam", "federation.pretrain_rounds=3", "federation.finetune_rounds=2",
              "federation.transport=delta_int8")  # fmt: skip
CRASHES = (("pretrain", 2), ("finetune", 2))  # kill the coordinator while these rounds are under way


def _subjects(fed: Federation, name: str, out: Path) -> list[dict]:
    """The site-local record of the rounds a site trained in the run whose folder is ``out``."""
    work_dir = Path(yaml.safe_load(fed.sites[name].read_text())["work_dir"])
    if not work_dir.is_absolute():
        work_dir = fed.sites[name].parent / work_dir
    run_key = json.loads((out / "launch.json").read_text())["run_key"]
    return jsonl(work_dir / "federation" / run_key / "subjects.jsonl")


def _crash_during(fed: Federation, out: Path, process: subprocess.Popen[bytes], phase: str, round_: int) -> dict:
    """SIGKILL the coordinator (endofed-server, SuperLink, SuperExec, ServerApp) once a site has finished its part
    of ``phase`` round ``round_`` while the server still waits for the other site; returns when and where."""
    state = out / "server_state.json"

    def saved() -> tuple[str, int] | None:
        meta = json.loads(state.read_text()) if state.exists() else None
        return None if meta is None else (meta["phase"], meta["round"])

    wait_for(lambda: saved() == (phase, round_ - 1), ROUND_S, f"{phase} round {round_ - 1} to complete")

    def finished() -> bool:
        return any((r["phase"], r["round"]) == (phase, round_) for n in fed.sites for r in _subjects(fed, n, out))

    wait_for(finished, SITE_ROUND_S, f"a site to finish {phase} round {round_}")
    superlink = kill_group_from_pidfile(out / "superlink.pid")
    process.kill()
    process.wait(timeout=GONE_S)
    at = time.time()
    wait_for(lambda: not group_alive(superlink), GONE_S, "the killed SuperLink's processes to go")
    # read once the coordinator is dead: the other site may have finished and the round been saved before the kill
    after = saved()
    return {"after": after, "at": at, "mid_round": after == (phase, round_ - 1)}


CRASH_S = ROUND_S + SITE_ROUND_S + 2 * GONE_S  # the waits of one _crash_during()


def _run(fed: Federation, out_name: str, crash: bool) -> dict:
    """One run with two sites; with ``crash``, the coordinator is killed during each of CRASHES and resumed."""
    config = fed.root / f"{out_name}.yaml"
    server = yaml.safe_load(fed.server_yaml.read_text()) | {"output_dir": out_name}
    config.write_text(yaml.safe_dump(server))
    out = fed.root / out_name
    clients = [start_client(fed, name, f"{out_name}_client_{name}") for name in fed.sites]
    log = fed.root / f"{out_name}_server.log"
    info: dict = {"crashes": []}
    try:
        process = start(["endofed-server", "--config", str(config)], log)
        for phase, round_ in CRASHES if crash else ():
            info["crashes"].append(_crash_during(fed, out, process, phase, round_))
            process = start(["endofed-server", "--resume", str(out)], log)
        assert process.wait(timeout=RUN_S) == 0, tail(log)
        info["done_at"] = time.time()
    finally:
        for client in clients:
            stop(client)
    info["encoder"], _ = load_checkpoint(out / "global_encoder_finetune.safetensors")
    info["summary"] = json.loads((out / "summary.json").read_text())
    info["rounds"] = jsonl(out / "rounds.jsonl")
    info["subjects"] = {name: _subjects(fed, name, out) for name in fed.sites}
    return info


def _committed_rounds(records: list[dict]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The train rounds of a round log that count, in order, and those a resume dropped.

    A ``resume`` event names the last round whose state was saved; train records after it were aggregated but not
    saved (the coordinator died first) and are redone by the resumed run.
    """
    kept: list[tuple[str, int]] = []
    dropped: list[tuple[str, int]] = []
    for record in records:
        if record["event"] == "train":
            kept.append((record["phase"], record["round"]))
        elif record["event"] == "resume":
            while kept and kept[-1] != (record["phase"], record["round"]):
                dropped.append(kept.pop())
    return kept, dropped


def _run_waits_s(sites: int, crash: bool) -> float:
    """The longest that the waits of one :func:`_run` can take."""
    return (len(CRASHES) * CRASH_S if crash else 0) + RUN_S + stop_budget_s(sites)


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return make_federation(tmp_path_factory.mktemp("resume"), ["alpha", "beta"], RESUME_RUN)


@pytest.mark.slow
@pytest.mark.timeout(budget_s(_run_waits_s(2, crash=False), _run_waits_s(2, crash=True)))
def test_a_coordinator_killed_mid_round_resumes_to_the_same_encoder_bitwise(two_sites):
    reference = _run(two_sites, "reference", crash=False)
    resumed = _run(two_sites, "crashed", crash=True)
    for crash in resumed["crashes"]:
        first = next(r for r in resumed["rounds"] if r["event"] == "train" and r["time"] > crash["at"])
        print(
            f"coordinator killed after {crash['after']}: round {first['phase']} {first['round']} done "
            f"{first['time'] - crash['at']:.0f} s after the kill"
        )
    # each kill lands mid-round, or (both sites finishing within the kill's few ms) just after that round was saved
    afters = [tuple(c["after"]) for c in resumed["crashes"]]
    assert all(a in ((p, r - 1), (p, r)) for a, (p, r) in zip(afters, CRASHES, strict=True)), afters
    assert any(c["mid_round"] for c in resumed["crashes"]), afters
    assert resumed["summary"]["resumed_after"] == dict(zip(("phase", "round"), afters[-1], strict=True))
    # The round log survives the crashes: every committed round once. A round the coordinator aggregated but was
    # killed before saving (the other site finished just before the kill) is logged, then redone after the resume.
    trained = [("pretrain", 1), ("pretrain", 2), ("pretrain", 3), ("finetune", 1), ("finetune", 2)]
    assert [(r["phase"], r["round"]) for r in reference["rounds"] if r["event"] == "train"] == trained
    committed, uncommitted = _committed_rounds(resumed["rounds"])
    assert committed == trained and len(uncommitted) <= len(CRASHES), uncommitted
    assert [(r["phase"], r["round"]) for r in resumed["rounds"] if r["event"] == "resume"] == afters
    # FedAdam's moments, the round numbers and every site's decoder, head and optimiser state carried over:
    # the same bits at the end, and the same test metrics.
    assert reference["encoder"].keys() == resumed["encoder"].keys()
    assert all(torch.equal(reference["encoder"][k], resumed["encoder"][k]) for k in reference["encoder"])
    ref_metrics = sorted(json.dumps(m, sort_keys=True) for m in reference["summary"]["sites"].values())
    assert ref_metrics == sorted(json.dumps(m, sort_keys=True) for m in resumed["summary"]["sites"].values())
    # The site that had finished an interrupted round ran it again, from its previous state (else the encoders
    # above would differ): pretrain round 2 and finetune round 2 each appear twice in some site's record.
    for phase_round, crash in zip(CRASHES, resumed["crashes"], strict=True):
        if not crash["mid_round"]:
            continue
        counts = [
            [(r["phase"], r["round"]) for r in records].count(phase_round) for records in resumed["subjects"].values()
        ]
        assert max(counts) == 2, (phase_round, counts)


def _site_dir(fed: Federation, name: str) -> Path:
    work_dir = Path(yaml.safe_load(fed.sites[name].read_text())["work_dir"])
    return work_dir if work_dir.is_absolute() else fed.sites[name].parent / work_dir


DROPOUT_RUN = ("federation.min_sites=3", "federation.quorum=2", "federation.pretrain_rounds=5",
               "federation.finetune_rounds=0", "federation.node_wait_s=20",
               "federation.round_timeout_s=150", "federation.transport=delta_int8")  # fmt: skip


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return make_federation(tmp_path_factory.mktemp("dropout"), ["alpha", "beta", "gamma"], DROPOUT_RUN)


@pytest.mark.slow
@pytest.mark.timeout(budget_s(ROUND_S, GONE_S, ROUND_S, RUN_S, stop_budget_s(3 + 1)))  # 3 clients and the server
def test_a_site_killed_mid_run_is_left_out_within_the_timeout_and_rejoins_losing_nothing(three_sites):
    fed, out = three_sites, three_sites.root / "out"
    log = fed.root / "server.log"
    # Telemetry and update checks switched on in the users' shells: endofed turns both off in its Flower processes.
    clients = {name: start_client(fed, name, extra_env=TELEMETRY_ON) for name in fed.sites}
    server = start(["endofed-server", "--config", str(fed.server_yaml)], log, TELEMETRY_ON)
    try:
        state = out / "server_state.json"
        wait_for(lambda: state.exists() and json.loads(state.read_text())["round"] >= 1, ROUND_S, "round 1")
        gamma_dir = _site_dir(fed, "gamma")
        for pid_file in (out / "superlink.pid", gamma_dir / "logs" / "supernode.pid"):
            assert flower_privacy_env(int(pid_file.read_text())) == {
                "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}  # fmt: skip
        kill_group_from_pidfile(gamma_dir / "logs" / "supernode.pid")  # the site's machine dies: SuperNode ...
        clients["gamma"].kill()  # ... and endofed-client, with no clean-up
        clients["gamma"].wait(timeout=GONE_S)
        killed = time.monotonic()
        without = wait_for(lambda: any(len(r.get("sites", ())) == 2 for r in jsonl(out / "rounds.jsonl")), ROUND_S,
                           "a round completed by the two remaining sites")  # fmt: skip
        clients["gamma"] = start_client(fed, "gamma", "client_gamma_restarted")
        restarted = time.monotonic()
        assert server.wait(timeout=RUN_S) == 0, tail(log)
        finished = time.monotonic()
    finally:
        for client in clients.values():
            stop(client)
        stop(server)
    rounds = [r for r in jsonl(out / "rounds.jsonl") if r["event"] == "train"]
    sites_per_round = [len(r["sites"]) for r in rounds]
    print(
        f"sites per round {sites_per_round}; a round without the killed site done {without:.0f} s after the "
        f"kill; run done {finished - restarted:.0f} s after the restart, {finished - killed:.0f} s after the kill"
    )
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5] and sites_per_round[0] == 3
    assert 2 in sites_per_round and sites_per_round[-1] == 3  # left out, then back for the last round
    assert {s["node"] for s in rounds[-1]["sites"]} == {s["node"] for s in rounds[0]["sites"]}  # same node id
    # int8 down-link: the rejoined site holds no base the server knows of, so its first round back brings the
    # full fp32 weights (4x an int8 delta); the others get deltas throughout
    gone = sites_per_round.index(2)
    (missing,) = {s["node"] for s in rounds[0]["sites"]} - {s["node"] for s in rounds[gone]["sites"]}
    back = next(r for r in rounds[gone:] if missing in {s["node"] for s in r["sites"]})
    down = {s["node"]: s["bytes_down"] for s in back["sites"]}
    assert all(down[missing] > 3.9 * value for node, value in down.items() if node != missing), down
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["sites"]) == 3  # the rejoined site was tested too
    # Nothing on the site's disk was lost: its record of round 1 (before the crash) is still there, and its local
    # state continued to the last round.
    run_key = json.loads((out / "launch.json").read_text())["run_key"]
    records = jsonl(gamma_dir / "federation" / run_key / "subjects.jsonl")
    trained = [r["round"] for r in records if r["phase"] == "pretrain"]
    assert trained[0] == 1 and trained[-1] == 5 and len(trained) < 5  # it missed at least the round it died in
    assert {r["round"] for r in rounds if len(r["sites"]) == 3} <= set(trained)
    saved = gamma_dir / "federation" / run_key / "mae" / "round-0005" / "state.json"  # its newest local state
    assert json.loads(saved.read_text())["round"] == 5


HOSTILE_RUN = (
    "federation.min_sites=3",
    "federation.quorum=2",
    "federation.pretrain_rounds=14",
    "federation.finetune_rounds=2",
    "federation.node_wait_s=60",
)  # the shipped bounds: the defaults
FAULT_PLAN = {
    2: "nan",
    3: "keys",
    4: "shape",
    5: "dtype",
    6: "norm",
    7: "examples",
    8: "metric-key",
    9: "metric-list",
    10: "no-arrays",
    11: "text-array",
    12: "uint8",
    13: "config",
    14: "raise",
}
EVAL_PLAN = {1: "eval-no-metrics", 2: "eval-nan"}  # the fine-tuning phase's evaluate rounds
REASONS = {"nan": "NaN or Inf", "keys": "arrays beyond the shared encoder", "shape": "has shape",
           "dtype": "has dtype float64", "norm": "above the bound 0.5",
           "examples": "above the bound of 10000 volumes|changed from",  # a regular expression, as each of these
           "metric-key": "outside the train schema", "metric-list": "'train-loss' is a list",
           "no-arrays": "array records none", "text-array": "has dtype <U40", "uint8": "has dtype uint8",
           "config": "a config record", "eval-no-metrics": "metric records none",
           "eval-nan": "'auc' is nan"}  # fmt: skip


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("hostile")
    app_dir = build_instrumented_app(root / "app")  # the shipped ClientApp cannot inject faults
    return make_federation(root, ["alpha", "beta", "gamma"], HOSTILE_RUN, app_dir=app_dir)


def _coordinator_text(fed: Federation, out: Path) -> str:
    """Everything the coordinator wrote that a site's reply can reach, as text: its logs, round records, summary and
    every table of the SuperLink's database but ``fab`` (the app bundle, whose source names the test's secrets)."""
    texts = [(fed.root / "server.log").read_text(errors="replace")]
    texts += [p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in (".log", ".json", ".jsonl")]
    with sqlite3.connect(out / "superlink.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'fab'").fetchall():
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()  # noqa: S608 (names from the database itself)
            texts += [
                bytes(v).decode(errors="replace") if isinstance(v, bytes) else str(v) for row in rows for v in row
            ]
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.timeout(budget_s(HOSTILE_RUN_S, stop_budget_s(3 + 1)))  # 2 clients, the SuperNode loop, the server
def test_hostile_replies_are_rejected_and_logged_and_the_run_goes_on(hostile):
    from endofed.config import load_site_config
    from endofed.federated.faults import LEAKED_PATH, LEAKED_SUBJECT, SENT_ON_PURPOSE
    from endofed.federated.site_errors import ERROR_LOG, SITE_DATA, error_reason
    from endofed.launch.deployment import supernode_command
    from endofed.launch.processes import free_port

    fed, out = hostile, hostile.root / "out"
    gamma = load_site_config(fed.sites["gamma"])
    command = supernode_command(gamma, fed.sites["gamma"], free_port())  # a site running code of its own
    node_config = command.index("--node-config") + 1
    plan = [f"{fault}@{r}" for r, fault in FAULT_PLAN.items()] + [f"{fault}@{r}" for r, fault in EVAL_PLAN.items()]
    command[node_config] += f' inject-fault="{",".join(plan)}"'
    processes = [start_client(fed, name) for name in ("alpha", "beta")]
    # Like endofed-client, restart the SuperNode until it can join (it exits if the SuperLink is not up yet).
    loop = f"until {shlex.join(command)}; do sleep 2; done"
    processes.append(start(["bash", "-c", loop], fed.root / "hostile_supernode.log"))
    server = start(["endofed-server", "--config", str(fed.server_yaml)], fed.root / "server.log")
    started = time.monotonic()
    try:
        assert server.wait(timeout=HOSTILE_RUN_S) == 0, tail(fed.root / "server.log")
    finally:
        for process in processes:
            stop(process)
        stop(server)
    print(f"hostile run: {len(FAULT_PLAN) + len(EVAL_PLAN)} hostile replies, {time.monotonic() - started:.0f} s")
    records = jsonl(out / "rounds.jsonl")
    rounds = [r for r in records if r["event"] == "train" and r["phase"] == "pretrain"]
    assert [r["round"] for r in rounds] == list(range(1, 15)) and all(r["aggregated"] for r in rounds)
    assert len(rounds[0]["sites"]) == 3 and rounds[0]["rejected"] == []  # round 1: the site behaves
    hostile_node = ({s["node"] for s in rounds[0]["sites"]} - {s["node"] for s in rounds[1]["sites"]}).pop()
    for record in rounds[1:]:
        fault = FAULT_PLAN[record["round"]]
        assert len(record["sites"]) == 2 and hostile_node not in {s["node"] for s in record["sites"]}, fault
        if fault == "raise":  # a failure, not a rejection: the site's code raised
            assert record["failures"] == 1 and record["rejected"] == []
            continue
        (rejected,) = record["rejected"]
        assert rejected["node"] == hostile_node and re.search(REASONS[fault], rejected["reason"]), (fault, rejected)
    evaluations = [r for r in records if r["event"] == "evaluate"]
    assert [r["round"] for r in evaluations] == [1, 2]
    for record in evaluations:
        (rejected,) = record["rejected"]
        assert rejected["node"] == hostile_node and re.search(REASONS[EVAL_PLAN[record["round"]]], rejected["reason"])
        assert {s["node"] for s in record["sites"]} == {s["node"] for s in rounds[1]["sites"]}  # the honest two
    encoder, _ = load_checkpoint(out / "global_encoder_finetune.safetensors")
    assert all(torch.isfinite(v).all() for v in encoder.values())
    # The exception text stayed at the site: its own log has it, nothing the coordinator wrote does.
    coordinator = _coordinator_text(fed, out)
    assert error_reason(SITE_DATA) in coordinator  # the fixed sentence did arrive
    assert SENT_ON_PURPOSE in coordinator  # the scan reaches what the hostile replies carried (reasons quote it)
    assert LEAKED_SUBJECT not in coordinator and LEAKED_PATH not in coordinator
    assert LEAKED_SUBJECT in (gamma.work_dir / "logs" / ERROR_LOG).read_text()
