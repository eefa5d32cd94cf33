"""The gate in one process: Flower's ClientApp runner with its first step wrapped (Flower's I/O replaced by fakes),
the SuperNode arguments endofed-client adds, and the fail-closed hooks. Real processes: tests/test_app_approval.py."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from endofed.approval import gate
from endofed.approval.bundle import NOT_APPROVED, REFUSAL_TAG
from endofed.config import SiteConfig
from endofed.launch.deployment import supernode_command
from endofed.launch.site_gate import gate_superexec_command, gated_supernode_args, secret_path

ROOT = Path(__file__).resolve().parents[2]
CONTENT = b"the bundle's bytes"
HASH = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def flower(monkeypatch):
    """Flower's run_clientapp module with its Runtime API calls replaced by recorders; ``calls`` lists them."""
    from flwr.app import Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supernode.runtime import run_clientapp as module

    for name, value in (("_run_id", 5), ("_node_id", 7), ("_task_id", 9)):  # as Flower's pull_task_input sets it
        monkeypatch.setattr(TaskIdentity, name, value)
    message = Message(RecordDict(), dst_node_id=7, message_type="train")
    run = types.SimpleNamespace(run_id=5, fab_id="endofed/endofed", fab_version="0.1.0", fab_hash=HASH)
    fab = types.SimpleNamespace(hash_str=HASH, content=CONTENT)
    calls: list[tuple[str, object]] = []

    def run_clientapp(**kwargs):  # Flower's order: pull the task input, then install the bundle, then import it
        _message, _context, _run, fab_ = module.pull_task_input("client")
        calls.append(("install_from_fab", fab_.content))

    monkeypatch.setattr(module, "pull_task_input", lambda client: (message, "context", run, fab))
    monkeypatch.setattr(module, "push_message", lambda client, reply, context: calls.append(("reply", reply)))
    monkeypatch.setattr(module, "push_task_output", lambda client, **kw: calls.append(("task_output", kw)))
    monkeypatch.setattr(module, "run_clientapp", run_clientapp)
    monkeypatch.setattr(gate, "_forget_endofed", lambda: calls.append(("forget", None)))  # keep this process's
    return types.SimpleNamespace(calls=calls, run=run, fab=fab)


def _args(tmp_path: Path, approved: tuple[str, ...]) -> argparse.Namespace:
    return gate.build_parser().parse_args(["clientapp", "--site-log", str(tmp_path / "logs" / "supernode.log"),
                                           "--approved", ",".join(approved), "--runtime-api-address",
                                           "127.0.0.1:1", "--token", "ab" * 16])  # fmt: skip


def test_an_approved_bundle_goes_on_to_flowers_install(flower, tmp_path):
    assert gate.run_gate_clientapp(_args(tmp_path, ("0" * 64, HASH))) == 0
    assert flower.calls == [("forget", None), ("install_from_fab", CONTENT)]
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("claimed", ["run", "fab"])
def test_a_bundle_whose_claimed_hash_differs_from_its_content_is_refused(flower, tmp_path, claimed):
    setattr(flower.run if claimed == "run" else flower.fab, "fab_hash" if claimed == "run" else "hash_str", "1" * 64)
    assert gate.run_gate_clientapp(_args(tmp_path, (HASH, "1" * 64))) == gate.EXIT_REFUSED
    assert [name for name, _ in flower.calls] == ["reply", "task_output"]


def test_an_unapproved_bundle_gets_an_error_reply_one_log_line_and_is_never_installed(flower, tmp_path):
    from flwr.common.constant import SubStatus

    assert gate.run_gate_clientapp(_args(tmp_path, ("0" * 64,))) == gate.EXIT_REFUSED
    (reply_call, reply), (output_call, output) = flower.calls
    assert (reply_call, output_call) == ("reply", "task_output")  # no install, no import, no second reply
    assert reply.has_error() and reply.error.code == NOT_APPROVED and HASH in reply.error.reason
    assert reply.error.reason.startswith(f"endofed {NOT_APPROVED}: ")
    assert output == {"context": None, "sub_status": SubStatus.FAILED, "details": reply.error.reason}
    (line,) = (tmp_path / "logs" / "supernode.log").read_text().splitlines()
    assert REFUSAL_TAG in line and f"sha256:{HASH} (run 5, endofed/endofed 0.1.0)" in line


def test_an_empty_approved_list_refuses_every_bundle(flower, tmp_path):
    assert gate.run_gate_clientapp(_args(tmp_path, ())) == gate.EXIT_REFUSED


def test_a_flower_without_the_hooked_function_stops_the_gate():
    with pytest.raises(SystemExit, match="not found"):
        gate._hook(types.ModuleType("flwr.moved"), "pull_task_input", print)


def test_the_gate_executor_starts_only_clientapp_tasks_as_the_gate(monkeypatch):
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResultStatus

    started = []
    monkeypatch.setattr(gate.subprocess, "Popen", lambda command: started.append(command))
    executor = gate._gate_executor("/site/logs/supernode.log", ("a" * 64,))

    def spec(task_type):
        return ExecutionSpec(task_type, "127.0.0.1:5", "cd" * 16, True, None, False, 42, False, 1)

    assert executor.launch(spec(TaskType.CLIENT_APP)).status == LaunchResultStatus.ACCEPTED
    assert executor.launch(spec(TaskType.AGENT_APP)).status == LaunchResultStatus.FAILED
    (command,) = started
    assert command[:5] == gate.gate_command("clientapp") and command[3] == "endofed.approval.gate"
    assert command[5:] == ["--site-log", "/site/logs/supernode.log", "--approved", "a" * 64, "--runtime-api-address",
                           "127.0.0.1:5", "--token", "cd" * 16, "--parent-pid", "42"]  # fmt: skip


def test_only_a_site_with_approved_apps_runs_its_supernode_behind_the_gate(tmp_path):
    plain = SiteConfig(work_dir=tmp_path / "plain", root_certificates=Path("ca"), private_key=Path("key"))
    assert gated_supernode_args(plain) == []
    assert "--isolation" not in supernode_command(plain, tmp_path / "site.yaml", 9000)
    gated = SiteConfig(work_dir=tmp_path / "work", approved_apps=("a" * 64,), root_certificates=Path("ca"),
                       private_key=Path("key"))  # fmt: skip
    command = supernode_command(gated, tmp_path / "site.yaml", 9000)
    secret = secret_path(gated)
    assert command[-4:] == ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
    assert len(secret.read_bytes()) == 32 and stat.S_IMODE(secret.stat().st_mode) == 0o600
    superexec = gate_superexec_command(gated, 9000, 123, tmp_path / "work" / "logs" / "supernode.log")
    assert superexec[3:5] == ["endofed.approval.gate", "superexec"]
    assert superexec[superexec.index("--runtime-api-address") + 1] == "127.0.0.1:9000"
    assert superexec[superexec.index("--superexec-auth-secret-file") + 1] == str(secret)


def test_the_launcher_and_the_site_config_do_not_load_flower():
    probe = ("import json, sys\nimport endofed.launch.site_gate, endofed.cli.app_cmd\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'flwr')))")  # fmt: skip
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=True)  # fmt: skip
    assert json.loads(result.stdout) == []
