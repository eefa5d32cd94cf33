"""Real endofed-server / endofed-client processes on 127.0.0.1 for the deployment and fault-injection tests.

Everything is a real part: certificates from ``endofed certs``' code, synthetic NIfTI sites, the console scripts
of this environment, TLS and SuperNode authentication. Processes are started in their own session and ended
by PID (their process group), never by name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from endofed.certs import create_credentials
from endofed.launch.processes import free_port
from endofed.synth.cohort import generate
from endofed.synth.profile import load_preset
from tests.helpers import OVERRIDES, ROOT, TINY

BIN = Path(sys.executable).parent
ENV = dict(
    os.environ,
    FLWR_TELEMETRY_ENABLED="0",
    FLWR_DISABLE_UPDATE_CHECK="1",
    OMP_NUM_THREADS="1",
    PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
)  # Flower starts flower-superexec by name

# Time budgets (s). Every wait of a real-process test has its own deadline and fails with a message naming what
# it waited for; the test's pytest timeout (:func:`budget_s`) is the sum of the waits it can make plus these, so
# the cap never fires before a wait inside it, and the ``finally`` clauses still stop the processes.
STOP_GRACE_S = 60  # stop(): SIGTERM, SIGKILL after this, then wait as long again
SETUP_S = 120  # make_federation(): certificates and tiny synthetic sites (a module fixture, set up in a test's time)
MARGIN_S = 120  # what no deadline bounds: starting interpreters, reading results, asserting


def stop_budget_s(processes: int) -> float:
    """The longest that :func:`stop` can take for ``processes`` processes."""
    return processes * 2 * STOP_GRACE_S


def budget_s(*waits_s: float) -> int:
    """The pytest timeout of a test whose waits are ``waits_s``: their sum + SETUP_S + MARGIN_S, in whole seconds."""
    return math.ceil(sum(waits_s) + SETUP_S + MARGIN_S)


@dataclasses.dataclass
class Federation:
    """Certificates, synthetic sites and a server YAML under ``root``."""

    root: Path
    port: int
    sites: dict[str, Path]  # site id -> site YAML
    server_yaml: Path


def make_federation(
    root: Path, site_ids: Sequence[str], overrides: Sequence[str] = (), seed: int = 2, app_dir: Path = ROOT
) -> Federation:
    """Tiny synthetic sites (the ``tiny`` preset's first site cloned as needed), credentials, site and server YAMLs.

    Site ``k`` of ``site_ids`` gets the tiny preset's profile ``k % 2`` renamed; every site and the server use a
    fresh port on 127.0.0.1. ``app_dir`` is the Flower app the server ships (default: this repository's).
    """
    create_credentials(root / "certs", hosts=["127.0.0.1", "localhost"], site_ids=[*site_ids, "rogue"])
    preset = load_preset("tiny")
    profiles = [dataclasses.replace(preset[k % len(preset)], name=name) for k, name in enumerate(site_ids)]
    yamls = generate(profiles, root / "data", "tiny", seed=seed)
    port = free_port()
    sites = {}
    for name, path in zip(site_ids, yamls, strict=True):
        site = yaml.safe_load(path.read_text())
        site |= {"server_address": f"127.0.0.1:{port}", "root_certificates": str(root / "certs" / "ca.crt"),
                 "private_key": str(root / "certs" / "keys" / name)}  # fmt: skip
        path.write_text(yaml.safe_dump(site))
        sites[name] = path
    server = {"port": port, "ca_certificate": "certs/ca.crt", "server_certificate": "certs/server.pem",
              "server_key": "certs/server.key", "site_public_keys": [f"certs/keys/{n}.pub" for n in site_ids],
              "experiment": TINY, "overrides": [*OVERRIDES, *overrides], "output_dir": "out",
              "app_dir": str(app_dir)}  # fmt: skip
    server_yaml = root / "server.yaml"
    server_yaml.write_text(yaml.safe_dump(server))
    return Federation(root, port, sites, server_yaml)


def start(args: Sequence[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a console script of this environment (or a program on PATH) in its own session, output to ``log``."""
    program = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    return subprocess.Popen(  # noqa: S603
        [program, *args[1:]], stdout=log.open("ab"), stderr=subprocess.STDOUT,
        env={**ENV, **(extra_env or {})}, start_new_session=True,
    )  # fmt: skip


def start_client(
    fed: Federation, name: str, log_name: str | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``endofed-client`` for one site (same tiny config as the server)."""
    overrides = sum((["--set", o] for o in OVERRIDES[:2]), [])
    return start(["endofed-client", "--site", str(fed.sites[name]), "--config", TINY, *overrides],
                 fed.root / f"{log_name or 'client_' + name}.log", extra_env)  # fmt: skip


def stop(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group (endofed-server/-client stop their Flower children on it), SIGKILL if needed."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace_s)


def kill_group_from_pidfile(pid_file: Path) -> int:
    """SIGKILL the process group led by the PID in ``pid_file`` (a crash: no clean-up runs); returns the PID."""
    pid = int(pid_file.read_text().strip())
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return pid


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> float:
    """Poll until ``predicate()``; returns the seconds waited. Fails the test with ``what`` on timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - started


def jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (empty if it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file (for assertion messages)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} missing)"


def group_alive(pid: int) -> bool:
    """Whether any process of the process group ``pid`` is still running."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


# What a user's shell might say; endofed must switch both off in every Flower process it starts.
TELEMETRY_ON = {"FLWR_TELEMETRY_ENABLED": "1", "FLWR_DISABLE_UPDATE_CHECK": "0"}


def flower_privacy_env(pid: int) -> dict[str, str]:
    """The telemetry and update-check variables in the environment of process ``pid`` (Linux /proc)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    return {k: pairs.get(k, "") for k in TELEMETRY_ON}
