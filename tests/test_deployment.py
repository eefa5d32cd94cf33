"""Deployment mode with real processes on 127.0.0.1: TLS, SuperNode authentication, endofed-server/-client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from endofed.certs import create_credentials
from endofed.config import load_server_config
from endofed.launch.deployment import CONNECTION, register_sites, superlink_command
from endofed.launch.flwr import write_connection
from endofed.launch.processes import Child, flower_env, free_port, wait_for_port
from endofed.synth.cohort import generate
from endofed.synth.profile import load_preset
from tests.helpers import OVERRIDES, TINY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | int]:
    """Two synthetic sites, certificates for them and a rogue one, site and server YAMLs."""
    root = tmp_path_factory.mktemp("deploy")
    create_credentials(root / "certs", hosts=["127.0.0.1", "localhost"], site_ids=["alpha", "beta", "rogue"])
    site_yamls = generate(load_preset("tiny"), root / "data", "tiny", seed=2)
    port = free_port()
    for path in site_yamls:
        site = yaml.safe_load(path.read_text())
        site |= {"server_address": f"127.0.0.1:{port}", "root_certificates": str(root / "certs" / "ca.crt"),
                 "private_key": str(root / "certs" / "keys" / site["site_id"])}  # fmt: skip
        path.write_text(yaml.safe_dump(site))
    server = {"port": port, "ca_certificate": "certs/ca.crt", "server_certificate": "certs/server.pem",
              "server_key": "certs/server.key", "site_public_keys": ["certs/keys/alpha.pub", "certs/keys/beta.pub"],
              "experiment": TINY, "overrides": list(OVERRIDES), "output_dir": "out", "app_dir": str(ROOT)}  # fmt: skip
    (root / "server.yaml").write_text(yaml.safe_dump(server))
    return {"root": root, "port": port, "alpha": site_yamls[0], "beta": site_yamls[1]}


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.mark.slow
def test_server_and_two_clients_complete_a_tls_authenticated_run(federation):
    root = federation["root"]
    server = _start([str(BIN / "endofed-server"), "--config", str(root / "server.yaml"), "--rounds", "2",
                     "--finetune-rounds", "1"], root / "server.log")  # fmt: skip
    clients = [
        _start(
            [
                str(BIN / "endofed-client"),
                "--site",
                str(federation[name]),
                "--config",
                TINY,
                *sum((["--set", o] for o in OVERRIDES[:2]), []),
            ],
            root / f"client_{name}.log",
        )  # fmt: skip
        for name in ("alpha", "beta")
    ]
    try:
        assert server.wait(timeout=400) == 0, (root / "server.log").read_text()[-3000:]
    finally:
        for client in clients:  # endofed-client stops its SuperNode on SIGINT/SIGTERM; kill by PID
            client.send_signal(signal.SIGTERM)
        for client in clients:
            client.wait(timeout=60)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert len(summary["sites"]) == 2 and summary["rounds"] == {"pretrain": 2, "finetune": 1}
    rounds = [json.loads(line) for line in (root / "out" / "rounds.jsonl").read_text().splitlines()]
    assert [len(r["sites"]) for r in rounds if r["event"] == "train"] == [2, 2, 2]
    leftover = subprocess.run(["pgrep", "-f", f"127.0.0.1:{federation['port']}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""  # no SuperLink or SuperNode left behind


@pytest.mark.slow
def test_unregistered_or_untrusting_supernodes_cannot_join(federation, tmp_path):
    root = federation["root"]
    server = load_server_config(root / "server.yaml")
    port = free_port()
    server = type(server)(**{**server.__dict__, "port": port, "output_dir": tmp_path / "out"})
    (tmp_path / "out").mkdir()
    env = flower_env(tmp_path / "flwr-home", {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    write_connection(tmp_path / "flwr-home", CONNECTION, f"127.0.0.1:{port}", server.ca_certificate)
    superlink = Child("SuperLink", superlink_command(server), tmp_path / "superlink.log", env)
    try:
        wait_for_port(superlink, port)
        register_sites(server, env)
        common = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{port}", "--max-retries", "1",
                  "--max-wait-time", "20"]  # fmt: skip
        rogue = Child("rogue", [*common, "--root-certificates", str(root / "certs" / "ca.crt"),
                                "--auth-supernode-private-key", str(root / "certs" / "keys" / "rogue"),
                                "--port", str(free_port())], tmp_path / "rogue.log", env)  # fmt: skip
        untrusting = Child("no-ca", [*common, "--auth-supernode-private-key", str(root / "certs" / "keys" / "alpha"),
                                     "--port", str(free_port())], tmp_path / "no_ca.log", env)  # fmt: skip
        # Control: the same command with a registered key joins and stays connected.
        registered = Child("registered", [*common, "--root-certificates", str(root / "certs" / "ca.crt"),
                                          "--auth-supernode-private-key", str(root / "certs" / "keys" / "beta"),
                                          "--port", str(free_port())], tmp_path / "registered.log", env)  # fmt: skip
        deadline = time.monotonic() + 90
        while (rogue.alive() or untrusting.alive()) and time.monotonic() < deadline:
            time.sleep(1)
        control_alive = registered.alive()
        rogue_log, no_ca_log = rogue.tail(200), untrusting.tail(200)
        for child in (rogue, untrusting, registered):
            child.stop()
    finally:
        superlink.stop()
    assert control_alive, registered.tail(40)
    assert rogue.process.returncode not in (0, None) and "Failed to activate SuperNode" in rogue_log
    assert untrusting.process.returncode not in (0, None) and "CERTIFICATE_VERIFY_FAILED" in no_ca_log
