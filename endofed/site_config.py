"""Where things are at one deployment: a hospital's site config and the coordinator's server config.

Unlike the experiment config (:mod:`endofed.config`, identical at every site), these describe one machine:
its data, work dir, device and credentials, or the SuperLink's certificates and registered sites. Both are
parsed by the strict builder of :mod:`endofed.config_builder`; relative paths are resolved against the YAML's
own folder. Re-exported by :mod:`endofed.config`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from endofed.approval.bundle import check_hash_list
from endofed.config_builder import load_dataclass, require, resolve_paths

THREADS_ENV = "ENDOFED_CPU_THREADS"  # torch CPU threads per site process (see training/device.py)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class SiteConfig:
    """One hospital: where its data and outputs are. Paths are resolved relative to the site YAML."""

    site_id: str = "site"  # short name shown in logs and the passport (no patient information)
    data_root: Path = Path("data")  # folder of the source images (read-only, never modified)
    manifest: Path | None = None  # CSV manifest (subject_id,t1,t2,label[,split]); None = discover folders
    t1_glob: str = "*T1*.nii*"  # folder discovery: T1 file pattern inside <data_root>/<subject>/
    t2_glob: str = "*T2*.nii*"  # folder discovery: T2 file pattern inside <data_root>/<subject>/
    labels_csv: Path | None = None  # folder discovery: optional CSV subject_id,label
    work_dir: Path = Path("work")  # cache, checkpoints, logs and the data passport go here
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cpu_threads: int = 0  # torch threads on the CPU (0 = auto: $ENDOFED_CPU_THREADS, else half the cores)
    server_address: str = "127.0.0.1:9092"  # SuperLink fleet address host:port
    root_certificates: Path | None = None  # CA certificate that signed the SuperLink's TLS certificate
    private_key: Path | None = None  # this site's ECDSA private key (SuperNode authentication)
    approved_apps: tuple[str, ...] | None = None  # bundles it runs ('endofed app hash'); None: any, []: none

    def __post_init__(self) -> None:
        if self.approved_apps is not None:
            check_hash_list(self.approved_apps, "site.approved_apps")
        require(
            bool(self.site_id) and self.site_id.replace("-", "").replace("_", "").isalnum(),
            f"site.site_id must be non-empty letters, digits, '-' or '_', got {self.site_id!r}",
        )
        device_ok = self.device in ("auto", "cpu", "cuda") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        require(device_ok, f"site.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        require(self.cpu_threads >= 0, f"site.cpu_threads must be >= 0 (0 = auto), got {self.cpu_threads!r}")
        host, sep, port = self.server_address.rpartition(":")
        require(
            bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535),
            f"site.server_address must be host:port with a port from 1 to 65535, got {self.server_address!r}",
        )


@dataclass(frozen=True)
class ServerConfig:
    """The coordinator: its SuperLink, certificates, registered sites and the run it submits.

    Paths are resolved relative to the server YAML.
    """

    host: str = "127.0.0.1"  # address the SuperLink binds to (0.0.0.0 to accept other machines; firewall it)
    port: int = 9092  # SuperLink port (Fleet, Control and Runtime APIs share it in Flower 1.42)
    address: str = "127.0.0.1"  # name or IP this machine's CLI uses to reach the SuperLink (must be in the cert)
    ca_certificate: Path = Path("certs/ca.crt")  # CA that signed the server certificate (from endofed certs)
    server_certificate: Path = Path("certs/server.pem")  # the SuperLink's TLS certificate
    server_key: Path = Path("certs/server.key")  # its private key
    site_public_keys: tuple[Path, ...] = ()  # SuperNode public keys to register (certs/keys/<site>.pub)
    experiment: Path = Path("configs/tiny.yaml")  # experiment config every site trains with
    overrides: tuple[str, ...] = ()  # section.key=value overrides of the experiment config
    output_dir: Path = Path("runs/server")  # checkpoints, rounds.jsonl, summary.json, logs, SuperLink database
    app_dir: Path | None = None  # the Flower app folder (default: found from the current folder)
    dashboard_host: str = "127.0.0.1"  # where endofed-server --dashboard serves (beyond 127.0.0.1: needs a token)
    dashboard_token_file: Path | None = None  # file holding that token (0600; the token never enters the run folder)

    def __post_init__(self) -> None:
        require(0 < self.port < 65536, f"server.port must be in 1..65535, got {self.port!r}")
        require(bool(self.host) and bool(self.address), f"server.host and server.address must be set, got {self!r}")


_SITE_PATH_FIELDS = ("data_root", "manifest", "labels_csv", "work_dir", "root_certificates", "private_key")


def load_site_config(path: str | Path, overrides: Sequence[str] = ()) -> SiteConfig:
    """Load a site YAML; relative paths in it are resolved against the YAML's own folder."""
    path = Path(path)
    site = load_dataclass(SiteConfig, path, overrides, "site")
    return resolve_paths(site, path.resolve().parent, _SITE_PATH_FIELDS)


_SERVER_PATH_FIELDS = (
    "ca_certificate",
    "server_certificate",
    "server_key",
    "site_public_keys",
    "experiment",
    "output_dir",
    "app_dir",
    "dashboard_token_file",
)


def load_server_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ServerConfig:
    """Load a server YAML (``None`` = defaults relative to the current folder); relative paths resolved."""
    server = load_dataclass(ServerConfig, path, overrides, "server")
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    return resolve_paths(server, base, _SERVER_PATH_FIELDS)
