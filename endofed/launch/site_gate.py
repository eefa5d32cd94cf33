"""Start a site's SuperNode behind endofed's code-approval gate when its site YAML lists ``approved_apps``.

Without ``approved_apps`` nothing changes: ``flower-supernode`` runs with Flower's default ``--isolation
subprocess`` and starts ``flower-superexec`` / ``flwr-clientapp`` itself. With it, the SuperNode runs with
``--isolation process`` and endofed-client starts the gate's SuperExec (:mod:`endofed.approval.gate`) next to
it, on the SuperNode's Runtime API (127.0.0.1), with a fresh random secret (mode 0600) for Flower's SuperExec
authentication (``--superexec-auth-secret-file``), so that only a process holding it can take the SuperNode's
tasks. The gate writes into the SuperNode's log, where a
ClientApp's output goes in the default mode too. The approved list is read when endofed-client starts.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from endofed.approval.gate import gate_command
from endofed.config import SiteConfig
from endofed.launch.processes import Child

SECRET_FILE = "superexec.secret"  # in <work_dir>/flwr-home/: shared by the SuperNode and the gate's SuperExec


def secret_path(site: SiteConfig) -> Path:
    """Where the SuperNode / gate shared secret of ``site`` lives."""
    return site.work_dir / "flwr-home" / SECRET_FILE


def write_secret(path: Path) -> Path:
    """A new random 32-byte secret in ``path``, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    os.chmod(path, 0o600)
    return path


def gated_supernode_args(site: SiteConfig) -> list[str]:
    """Extra ``flower-supernode`` arguments: none without ``approved_apps``, else process isolation + secret."""
    if site.approved_apps is None:
        return []
    return ["--isolation", "process", "--superexec-auth-secret-file", str(write_secret(secret_path(site)))]


def gate_superexec_command(site: SiteConfig, runtime_port: int, supernode_pid: int, site_log: Path) -> list[str]:
    """The command line of the gate's SuperExec for ``site``'s SuperNode (Runtime API on 127.0.0.1)."""
    assert site.approved_apps is not None  # only called for a gated site
    return [
        *gate_command("superexec"),
        "--site-log", str(site_log),
        "--approved", ",".join(site.approved_apps),
        "--runtime-api-address", f"127.0.0.1:{runtime_port}",
        "--parent-pid", str(supernode_pid),
        "--superexec-auth-secret-file", str(secret_path(site)),
    ]  # fmt: skip


def start_gate(
    site: SiteConfig, runtime_port: int, supernode: Child, log: Path, env: Mapping[str, str]
) -> Child | None:
    """Start the gate's SuperExec next to ``supernode`` (``None`` without ``approved_apps``); end it by PID."""
    if site.approved_apps is None:
        return None
    command = gate_superexec_command(site, runtime_port, supernode.pid, log)
    return Child("endofed approval gate", command, log, env)
