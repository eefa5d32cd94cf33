"""Site code approval with real processes on 127.0.0.1: a SuperLink (TLS, SuperNode authentication) and one
``endofed-client`` whose site YAML lists ``approved_apps``.

Two bundles are built from copies of this repository's app whose ``client/app.py`` ends with a module-level
statement that appends the path of the ``endofed`` package it imported to a marker file. Bundle A is approved
and runs (the marker appears: the positive control that the statement runs whenever the code is imported).
Bundle B differs from A by one byte of that file: it is refused, the marker does not appear, the site log has
one line per refused message and no traceback, and the coordinator's run log shows the error reply.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from endofed.approval.bundle import NOT_APPROVED, REFUSAL_TAG, bundle_hash
from endofed.config import load_server_config
from endofed.federated.runconfig import CONFIG_OVERRIDES, CONFIG_PATH, OUTPUT_DIR, RESUME, RUN_KEY
from endofed.launch.deployment import CONNECTION, register_sites, superlink_command
from endofed.launch.flwr import env_path_with_venv, flwr_run, last_run_status, write_connection
from endofed.launch.processes import Child, flower_env, wait_for_port
from tests.deploy_kit import (
    Federation,
    budget_s,
    make_federation,
    start_client,
    stop,
    stop_budget_s,
    tail,
    wait_for,
)
from tests.helpers import OVERRIDES, ROOT

pytestmark = pytest.mark.integration

RUN = ("federation.min_sites=1", "federation.pretrain_rounds=1", "federation.finetune_rounds=0",
       "federation.node_wait_s=120", "federation.round_timeout_s=300")  # fmt: skip
MARKER_ENV = "ENDOFED_TEST_APPROVAL_MARKER"
MARKER_CODE = (
    "\n# approval test marker: A\n"
    "__import__('pathlib').Path(__import__('os').environ['ENV']).open('a').write("
    "__import__('endofed').__file__ + '\\n') if 'ENV' in __import__('os').environ else None\n"
).replace("ENV", MARKER_ENV)
PROBE_ENV = "ENDOFED_TEST_APPROVAL_PROBE"
# Appended to both copies' server/app.py: the ServerApp writes every error reply it reads to the probe file.
SERVER_PROBE = """
# approval test probe: the error replies the coordinator receives
def _approval_probe():
    import os

    from flwr.app import Message

    path, original = os.environ.get("ENV"), Message.has_error

    def has_error(self):
        if original(self) and path:
            with open(path, "a") as handle:
                handle.write(f"{self.error.code} {self.error.reason}\\n")
        return original(self)

    Message.has_error = has_error


_approval_probe()
""".replace("ENV", PROBE_ENV)
JOIN_S = 120  # the site's SuperNode to connect
RUN_S = 420  # one flwr run (a round with one site) to end


def copy_app(dest: Path, variant: str) -> Path:
    """A copy of the app folder whose ClientApp module ends with :data:`MARKER_CODE` (``variant``: one byte)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("server", "client", "endofed", "configs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    for name in ("README.md", "LICENSE", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    client = dest / "client" / "app.py"
    client.write_text(client.read_text() + MARKER_CODE.replace("marker: A", f"marker: {variant}"))
    server = dest / "server" / "app.py"
    server.write_text(server.read_text() + SERVER_PROBE)
    return dest


def _run(fed: Federation, app: Path, env: dict[str, str], out: Path) -> tuple[str, str, str]:
    """``flwr run`` of ``app`` on the test SuperLink, as endofed-server submits it; ``(run id, status, log)``."""
    run_config: dict[str, str | int | float] = {
        CONFIG_PATH: "configs/tiny.yaml",
        CONFIG_OVERRIDES: ";".join([*OVERRIDES, *RUN]),
        OUTPUT_DIR: str(out),
        RUN_KEY: f"approval-{secrets.token_hex(4)}",
        RESUME: False,
    }
    out.mkdir(parents=True)
    flwr_run(app, CONNECTION, run_config, env, out / "flwr-run.log", quiet=True)
    run_id, status = last_run_status(CONNECTION, env)
    return run_id, status, (out / "flwr-run.log").read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(budget_s(JOIN_S, 2 * RUN_S, stop_budget_s(2), 30))
def test_an_approved_bundle_runs_and_a_one_byte_changed_bundle_is_refused_before_its_code_runs(tmp_path):
    fed = make_federation(tmp_path / "fed", ["alpha"], RUN)
    app_a, app_b = copy_app(tmp_path / "app_a", "A"), copy_app(tmp_path / "app_b", "B")
    code_a, code_b = ((app / "client" / "app.py").read_bytes() for app in (app_a, app_b))
    assert len(code_a) == len(code_b)
    assert sum(x != y for x, y in zip(code_a, code_b, strict=True)) == 1  # one byte apart
    approved = bundle_hash(app_a)
    assert bundle_hash(app_b) != approved
    site_yaml = fed.sites["alpha"]
    site = yaml.safe_load(site_yaml.read_text())
    site["approved_apps"] = [approved]
    site_yaml.write_text(yaml.safe_dump(site))
    work_dir = Path(site["work_dir"]) if Path(site["work_dir"]).is_absolute() else site_yaml.parent / site["work_dir"]
    site_log, marker = work_dir / "logs" / "supernode.log", tmp_path / "marker.txt"

    server = load_server_config(fed.server_yaml)
    (server.output_dir).mkdir(parents=True)
    flwr_home = tmp_path / "flwr-home"
    probe = tmp_path / "probe.txt"
    env = env_path_with_venv(flower_env(flwr_home, {PROBE_ENV: str(probe)}))
    write_connection(flwr_home, CONNECTION, f"127.0.0.1:{server.port}", server.ca_certificate)
    superlink = Child("SuperLink", superlink_command(server), tmp_path / "superlink.log", env)
    client = None
    try:
        wait_for_port(superlink, server.port)
        register_sites(server, env)
        client = start_client(fed, "alpha", extra_env={MARKER_ENV: str(marker)})
        wait_for(lambda: "SuperNode ID" in tail(site_log, 100_000), JOIN_S, "the site's SuperNode to join")

        run_a, status_a, log_a = _run(fed, app_a, env, tmp_path / "out_a")
        assert status_a == "finished:completed", log_a[-3000:] + tail(site_log)
        imported = marker.read_text().split()
        assert imported and all("flwr-home" in path and "/apps/" in path for path in imported), imported
        marker.unlink()  # the bundle's own endofed copy was imported, as under flwr-clientapp
        assert not probe.exists(), probe.read_text()  # the approved run had no error reply
        assert REFUSAL_TAG not in tail(site_log, 1_000_000)

        run_b, _status_b, log_b = _run(fed, app_b, env, tmp_path / "out_b")
        text = site_log.read_text(errors="replace")  # before the site is stopped (which logs its shutdown)
    finally:
        if client is not None:
            stop(client)
        superlink.stop()
    assert not marker.exists(), marker.read_text()  # none of bundle B's code ran
    refusals = [line for line in text.splitlines() if REFUSAL_TAG in line]
    assert refusals and all(f"(run {run_b}," in line for line in refusals), refusals
    assert all(bundle_hash(app_b) in line for line in refusals)
    assert "Traceback" not in text[text.index(REFUSAL_TAG) :], text[-3000:]
    replies = probe.read_text().splitlines() if probe.exists() else []
    assert replies and all(line.startswith(f"{NOT_APPROVED} endofed {NOT_APPROVED}: ") for line in replies), log_b
    assert not list((work_dir / "flwr-home").glob(f"apps/*{bundle_hash(app_b)[:8]}*"))  # never unpacked

    def gate_gone() -> bool:  # the gate's SuperExec (its command names the site log) ended with the site
        return not subprocess.run(["pgrep", "-f", str(site_log)], capture_output=True, check=False).stdout.strip()

    wait_for(gate_gone, 30, "the gate's processes to end")
