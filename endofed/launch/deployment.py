"""Deployment mode: ``endofed-server`` (SuperLink + run) and ``endofed-client`` (one hospital's SuperNode).

The server starts ``flower-superlink`` with TLS, SuperNode authentication, a database file and runtime
dependency installation off; registers every site's public key; submits the run with ``flwr run``; and
succeeds only if the run ends ``finished:completed``. The SuperLink is ended by PID in every case.
A client first checks its data (as ``endofed data check``), then starts ``flower-supernode`` with the CA
certificate, its private key and ``--node-config 'site-config="<abs path>"'``; the ClientApp it runs for
every message reads that site YAML.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from endofed.certs import verify_ca_cert, verify_server_cert, verify_site_key
from endofed.config import DataConfig, ServerConfig, SiteConfig
from endofed.data.check import check_site
from endofed.errors import ConfigError, DataError
from endofed.federated.runconfig import CONFIG_OVERRIDES, CONFIG_PATH, NODE_SITE_CONFIG, OUTPUT_DIR
from endofed.launch.flwr import (
    COMPLETED,
    env_path_with_venv,
    flower_binary,
    flwr_run,
    last_run_status,
    write_connection,
)
from endofed.launch.processes import Child, LaunchError, flower_env, free_port, sigterm_as_interrupt, wait_for_port
from endofed.launch.simulation import find_app_dir

CONNECTION = "endofed-server"
LOGGER = logging.getLogger(__name__)


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


def register_sites(server: ServerConfig, env: dict[str, str]) -> None:
    """``flwr supernode register`` every site public key (refused keys raise with Flower's message)."""
    for key in server.site_public_keys:
        result = subprocess.run(  # noqa: S603
            [flower_binary("flwr"), "supernode", "register", str(key), CONNECTION],
            env=env, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            detail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise LaunchError(f"registering site key {key} failed: {detail[0]}")


def run_server(server: ServerConfig, overrides: list[str]) -> Path:
    """Start the SuperLink, register the sites, run the federation; returns the path of ``summary.json``.

    Raises:
        ConfigError: a certificate, key or config file is missing.
        LaunchError: the SuperLink did not start, a key was refused, or the run did not finish completed.
    """
    _require_files(CA_certificate=server.ca_certificate, server_certificate=server.server_certificate,
                   server_key=server.server_key, experiment_config=server.experiment)  # fmt: skip
    for key in server.site_public_keys:
        _require_files(site_public_key=key)
    if not server.site_public_keys:
        raise ConfigError("no site_public_keys in the server config: no hospital could join")
    verify_server_cert(server.ca_certificate, server.server_certificate, server.address)
    require_free_port(server.host, server.port)
    app_dir = server.app_dir or find_app_dir(Path.cwd())
    out = server.output_dir
    out.mkdir(parents=True, exist_ok=True)
    env = env_path_with_venv(flower_env(out / "flwr-home"))
    write_connection(out / "flwr-home", CONNECTION, f"{server.address}:{server.port}", server.ca_certificate)
    run_config = {CONFIG_PATH: str(server.experiment), CONFIG_OVERRIDES: ";".join([*server.overrides, *overrides]),
                  OUTPUT_DIR: str(out)}  # fmt: skip
    with sigterm_as_interrupt():
        superlink = Child("SuperLink", superlink_command(server), out / "logs" / "superlink.log", env)
        try:
            wait_for_port(superlink, server.port)
            register_sites(server, env)
            flwr_run(app_dir, CONNECTION, run_config, env)
            run_id, status = last_run_status(CONNECTION, env)
        finally:
            superlink.stop()
    if status != COMPLETED:
        raise LaunchError(f"run {run_id} ended {status!r}, not {COMPLETED!r}; see {superlink.log}")
    return out / "summary.json"


def supernode_command(site: SiteConfig, site_yaml: Path, runtime_port: int) -> list[str]:
    """The ``flower-supernode`` command line of a hospital."""
    return [
        flower_binary("flower-supernode"),
        "--superlink", site.server_address,
        "--root-certificates", str(site.root_certificates),
        "--auth-supernode-private-key", str(site.private_key),
        "--node-config", f'{NODE_SITE_CONFIG}="{site_yaml.resolve()}"',
        "--host", "127.0.0.1",
        "--port", str(runtime_port),
    ]  # fmt: skip


def prepare_client(site: SiteConfig, site_yaml: Path, data: DataConfig) -> list[str]:
    """Check the site's data and credentials; returns the SuperNode command line.

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
    return supernode_command(site, site_yaml, free_port())


def run_client(
    site: SiteConfig, site_yaml: Path, data: DataConfig, retries: int = 30, retry_wait_s: float = 5.0
) -> int:
    """Check, then run this hospital's SuperNode in the foreground until it exits (Ctrl-C stops it).

    A SuperNode that cannot join (coordinator not up yet, or its key not registered yet) exits; it is
    restarted after ``retry_wait_s`` up to ``retries`` times, so sites can be started before the server.
    """
    command = prepare_client(site, site_yaml, data)
    env = env_path_with_venv(flower_env(site.work_dir / "flwr-home"))
    log = site.work_dir / "logs" / "supernode.log"
    with sigterm_as_interrupt():
        for attempt in range(retries + 1):
            child = Child("SuperNode", command, log, env)
            try:
                code = int(child.process.wait())
            finally:
                child.stop()
            if code == 0:
                return 0
            LOGGER.warning("SuperNode exited with code %d (attempt %d of %d); retrying", code, attempt + 1, retries + 1)
            time.sleep(retry_wait_s)
    raise LaunchError(f"the SuperNode could not join {site.server_address} after {retries + 1} attempts; log {log}")
