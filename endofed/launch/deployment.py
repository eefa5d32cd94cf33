"""Deployment mode: ``endofed-server`` (SuperLink + run) and ``endofed-client`` (one hospital's SuperNode).

The server starts ``flower-superlink`` with TLS, SuperNode authentication, a database file and runtime
dependency installation off; registers every site's public key; submits the run with ``flwr run``; and
succeeds only if the run ends ``finished:completed``. The SuperLink is ended by PID in every case.
A client first checks its data (as ``endofed data check``), then starts ``flower-supernode`` with the CA
certificate, its private key and ``--node-config 'site-config="<abs path>"'``; the ClientApp it runs for
every message reads that site YAML (behind endofed's code-approval gate if the site lists ``approved_apps``:
:mod:`endofed.launch.site_gate`). A SuperNode that could not join is restarted, and the cause in its log is
printed in one line (:mod:`endofed.launch.diagnose`); a refused certificate or key ends the client.

A run's folder (the server's ``output_dir``) holds ``launch.json`` (the server config, overrides and the run key
that names the sites' state folders) and, after every completed round, ``server_state.safetensors``. After a
crash, ``endofed-server --resume RUN_DIR`` restarts the SuperLink on the same database (the sites' keys stay
registered and their SuperNodes reconnect), stops the interrupted run and submits one that continues from
the last completed round. Process ids go to ``superlink.pid`` (server) and ``logs/supernode.pid`` (site).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from endofed.cert_checks import (
    verify_ca_cert,
    verify_server_cert,
    verify_server_key,
    verify_site_key,
    verify_site_public_key,
)
from endofed.config import DataConfig, ServerConfig, SiteConfig, load_config
from endofed.data.check import check_site
from endofed.errors import ConfigError, DataError
from endofed.federated.privacy import check_privacy_plan
from endofed.federated.protocol import SUMMARY_FILE
from endofed.federated.runconfig import (
    CONFIG_OVERRIDES,
    CONFIG_PATH,
    NODE_SITE_CONFIG,
    OUTPUT_DIR,
    RESUME,
    RUN_KEY,
    SOURCE_DESCRIBE,
)
from endofed.launch.diagnose import (
    CERTIFICATE_KINDS,
    UNKNOWN,
    Cause,
    classify_supernode_log,
    describe,
    give_up_reason,
    log_size,
    read_log_since,
    server_certificate_facts,
)
from endofed.launch.flwr import (
    COMPLETED,
    env_path_with_venv,
    failed_run_message,
    flower_binary,
    flwr_run,
    key_values,
    last_run_status,
    write_connection,
)
from endofed.launch.processes import Child, LaunchError, flower_env, free_port, sigterm_as_interrupt, wait_for_port
from endofed.launch.resume_check import check_resume_state
from endofed.launch.run_record import Launch, new_run_key, write_launch
from endofed.launch.simulation import find_app_dir, require_app_dir
from endofed.launch.site_gate import gated_supernode_args, start_gate
from endofed.launch.stream import RoundCallback
from endofed.lineage.source import git_describe

CONNECTION = "endofed-server"
LOGGER = logging.getLogger(__name__)


def write_pid(path: Path, pid: int) -> None:
    """Write a process id file (for operators and supervisors; processes are always ended by PID)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n", encoding="utf-8")


def _require_files(**files: Path | None) -> None:
    """One clear error for the first missing credential or config file."""
    for name, path in files.items():
        if path is None or not Path(path).is_file():
            raise ConfigError(f"{name.replace('_', ' ')} not found: {path} (create it with 'endofed certs')")


def require_free_port(host: str, port: int) -> None:
    """Refuse to start when something already listens on ``host:port`` (e.g. another SuperLink).

    Without this check the new SuperLink would fail to bind, but our own readiness probe would reach the
    *other* process and the run could be submitted to it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the SuperLink: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {host} is already in use ({exc.strerror}): another SuperLink or service is "
                "running; stop it or set another 'port' in the server config"
            ) from None


def superlink_command(server: ServerConfig) -> list[str]:
    """The ``flower-superlink`` command line of the coordinator."""
    return [
        flower_binary("flower-superlink"),
        "--ssl-ca-certfile", str(server.ca_certificate),
        "--ssl-certfile", str(server.server_certificate),
        "--ssl-keyfile", str(server.server_key),
        "--enable-supernode-auth",
        "--database", str(server.output_dir / "superlink.db"),
        "--disable-runtime-dependency-installation",
        "--host", server.host,
        "--port", str(server.port),
    ]  # fmt: skip


def _flwr(args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the ``flwr`` CLI against the server's connection."""
    return subprocess.run(  # noqa: S603
        [flower_binary("flwr"), *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def register_sites(server: ServerConfig, env: dict[str, str], resuming: bool = False) -> None:
    """``flwr supernode register`` every site public key (refused keys raise with Flower's message).

    When resuming, the SuperLink database already holds the keys: a key that is already registered is fine.
    """
    for key in server.site_public_keys:
        result = _flwr(["supernode", "register", str(key), CONNECTION], env)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 and not (resuming and "already" in output.lower()):
            detail = output.splitlines()[-1:] or ["no output"]
            raise LaunchError(f"registering site key {key} failed: {detail[0]}")


def stop_unfinished_runs(env: dict[str, str]) -> list[str]:
    """``flwr stop`` every run the SuperLink database still has as pending or running (a crashed run)."""
    result = _flwr(["ls", CONNECTION, "--format", "json"], env)
    try:
        runs = json.loads(result.stdout).get("runs", [])
    except json.JSONDecodeError:
        detail = f"{result.stdout[-300:]} {result.stderr[-300:]}"
        raise LaunchError(f"cannot list the runs with 'flwr ls': {detail}") from None
    stopped = []
    for run in runs:
        if not str(run.get("status", "")).startswith("finished"):
            _flwr(["stop", str(run.get("run-id")), CONNECTION], env)
            stopped.append(str(run.get("run-id")))
    return stopped


def run_server(
    server: ServerConfig,
    overrides: Sequence[str],
    resume: Launch | None = None,
    on_round: RoundCallback | None = None,
    quiet: bool = False,
) -> Path:
    """Start the SuperLink, register the sites, run (or resume) the federation; returns the path of ``summary.json``.

    Args:
        server: the coordinator's config (for a resumed run: the one recorded in its folder).
        overrides: experiment config overrides on top of the server config's.
        resume: the interrupted run to continue (from :func:`read_launch`), or ``None`` for a new run.
        on_round: called at the start of each federated round with ``(round, rounds)`` (a progress bar).
        quiet: keep Flower's streamed output off the console (it still goes to ``logs/flwr-run.log``).

    Raises:
        ConfigError: a certificate, key or config file is missing, or the run folder already holds a run.
        LaunchError: the SuperLink did not start, a key was refused, or the run did not finish completed.
    """
    _require_files(CA_certificate=server.ca_certificate, server_certificate=server.server_certificate,
                   server_key=server.server_key, experiment_config=server.experiment)  # fmt: skip
    for key in server.site_public_keys:
        _require_files(site_public_key=key)
    if not server.site_public_keys:
        raise ConfigError("no site_public_keys in the server config: no hospital could join")
    verify_server_cert(server.ca_certificate, server.server_certificate, server.address)
    verify_server_key(server.server_certificate, server.server_key)
    for key in server.site_public_keys:
        verify_site_public_key(key)
    require_free_port(server.host, server.port)
    app_dir = require_app_dir(server.app_dir) if server.app_dir else find_app_dir(Path.cwd())
    out = server.output_dir
    launch = resume or Launch(server, tuple(overrides), new_run_key(out))
    experiment = load_config(server.experiment, [*server.overrides, *launch.overrides])  # one line if it is bad
    check_privacy_plan(experiment.federation)
    if resume is None:
        write_launch(launch)
    else:
        check_resume_state(out, experiment)  # the state the ServerApp will load, checked before anything starts
    env = env_path_with_venv(flower_env(out / "flwr-home"))
    write_connection(out / "flwr-home", CONNECTION, f"{server.address}:{server.port}", server.ca_certificate)
    run_config: dict[str, str | int | float] = {
        CONFIG_PATH: str(server.experiment),
        CONFIG_OVERRIDES: ";".join([*server.overrides, *launch.overrides]),
        OUTPUT_DIR: str(out),
        RUN_KEY: launch.run_key,
        RESUME: resume is not None,
        SOURCE_DESCRIBE: git_describe(app_dir) or "",
    }
    with sigterm_as_interrupt():
        superlink = Child("SuperLink", superlink_command(server), out / "logs" / "superlink.log", env)
        write_pid(out / "superlink.pid", superlink.pid)
        try:
            wait_for_port(superlink, server.port)
            register_sites(server, env, resuming=resume is not None)
            if resume is not None:
                stopped = stop_unfinished_runs(env)
                LOGGER.warning("resuming %s; stopped the interrupted run(s) %s", out, ", ".join(stopped) or "none")
            output = flwr_run(
                app_dir, CONNECTION, run_config, env, out / "logs" / "flwr-run.log", quiet=quiet, on_round=on_round
            )
            run_id, status = last_run_status(CONNECTION, env)
        finally:
            superlink.stop()
            (out / "superlink.pid").unlink(missing_ok=True)
    if status != COMPLETED:
        raise LaunchError(failed_run_message(run_id, status, output, superlink.log))
    return out / SUMMARY_FILE


def supernode_command(site: SiteConfig, site_yaml: Path, runtime_port: int) -> list[str]:
    """The ``flower-supernode`` command line of a hospital.

    The site YAML's path reaches the ClientApp through Flower's ``--node-config`` parser; :func:`key_values`
    escapes it so that any path (quotes, spaces, backslashes, ``=``, non-ASCII) arrives unchanged.
    """
    return [
        flower_binary("flower-supernode"),
        "--superlink", site.server_address,
        "--root-certificates", str(site.root_certificates),
        "--auth-supernode-private-key", str(site.private_key),
        "--node-config", key_values({NODE_SITE_CONFIG: str(site_yaml.resolve())}),
        "--host", "127.0.0.1",
        "--port", str(runtime_port),
        *gated_supernode_args(site),  # with approved_apps: --isolation process (endofed.launch.site_gate)
    ]  # fmt: skip


def check_client(site: SiteConfig, site_yaml: Path, data: DataConfig) -> None:
    """Check the site's data and credentials before its SuperNode starts.

    Raises:
        DataError: the data check fails (the site must not join).
        ConfigError: the CA certificate or the private key is missing.
    """
    _require_files(root_certificates=site.root_certificates, private_key=site.private_key)
    assert site.root_certificates is not None and site.private_key is not None  # checked just above
    verify_ca_cert(site.root_certificates)
    verify_site_key(site.private_key)
    check = check_site(site, data)
    if not check.passport["ready"]:
        failures = check.passport["failures"] or "no usable case"
        raise DataError(
            f"site {site.site_id!r} is not ready to join: {failures}; run 'endofed data check --site {site_yaml}'"
        )


def retry_wait(attempt: int, first_s: float = 5.0, longest_s: float = 60.0, steady: int = 6) -> float:
    """Seconds before restart ``attempt`` (0-based) of a SuperNode that could not join.

    ``first_s`` for the first ``steady`` attempts (the coordinator is usually just starting), then doubling up
    to ``longest_s`` (it is down for longer: a reboot, a crash before ``--resume``).
    """
    return float(min(longest_s, first_s * 2 ** min(max(0, attempt - steady + 1), 16)))


def why_supernode_failed(site: SiteConfig, log: Path, offset: int, code: int) -> tuple[Cause, str]:
    """The cause of a SuperNode exit (from what it appended to ``log`` after ``offset``) and its explanation."""
    cause = classify_supernode_log(read_log_since(log, offset))
    if cause.kind == UNKNOWN and not cause.detail:
        cause = Cause(UNKNOWN, f"exit code {code}, nothing logged")
    facts = server_certificate_facts(site.server_address) if cause.kind in CERTIFICATE_KINDS else None
    return cause, describe(cause, site.server_address, facts, site.root_certificates)


def run_client(
    site: SiteConfig, site_yaml: Path, data: DataConfig, retries: int | None = None, retry_wait_s: float = 5.0
) -> int:
    """Check, then run this hospital's SuperNode in the foreground until it exits (Ctrl-C stops it).

    A SuperNode that cannot join exits; every failed attempt logs its cause in one line (read from
    ``logs/supernode.log``). It is restarted after a wait that doubles from ``retry_wait_s`` up to a minute,
    ``retries`` times (``None``: until stopped), so sites can be started before the server and outlast a
    coordinator outage. A cause that restarting cannot heal (a refused certificate: 3 identical failures in a
    row; a refused key, which the operator may still register: 10) ends it with :class:`LaunchError`; see
    :data:`endofed.launch.diagnose.GIVE_UP_AFTER`.
    """
    check_client(site, site_yaml, data)
    env = env_path_with_venv(flower_env(site.work_dir / "flwr-home"))
    log = site.work_dir / "logs" / "supernode.log"
    pid_file = site.work_dir / "logs" / "supernode.pid"
    history: list[Cause] = []
    with sigterm_as_interrupt():
        while True:
            offset = log_size(log)
            port = free_port()  # a fresh local port for the SuperNode's Runtime API
            child = Child("SuperNode", supernode_command(site, site_yaml, port), log, env)
            write_pid(pid_file, child.pid)
            gate = None
            try:
                gate = start_gate(site, port, child, log, env)  # None unless the site lists approved_apps
                code = int(child.process.wait())
            finally:
                child.stop()
                if gate is not None:
                    gate.stop()
                pid_file.unlink(missing_ok=True)
            if code == 0:
                return 0
            cause, why = why_supernode_failed(site, log, offset, code)
            history.append(cause)
            stop = give_up_reason(history, retries)
            if stop is not None:
                raise LaunchError(f"SuperNode could not join {site.server_address} ({stop}): {why} (see {log})")
            wait = retry_wait(len(history) - 1, retry_wait_s)
            LOGGER.warning("SuperNode could not join %s: %s (see %s); retrying in %.0f s (attempt %d%s)",
                           site.server_address, why, log, wait, len(history),
                           "" if retries is None else f" of {retries + 1}")  # fmt: skip
            time.sleep(wait)
