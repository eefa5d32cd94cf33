"""``endofed-sim``: the same ServerApp/ClientApp on one machine, under Flower's simulation engine (Ray).

A private SuperLink in simulation mode is started on free loopback ports with its own FLWR_HOME inside the
output folder; ``flwr run`` submits the app with one simulated SuperNode per site YAML (site k reads YAML k);
the SuperLink is always ended by PID, also on Ctrl-C or error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.config import THREADS_ENV, load_config, load_site_config
from endofed.errors import ConfigError
from endofed.federated.privacy import check_privacy_plan
from endofed.federated.protocol import PARTITION_ID, SUMMARY_FILE
from endofed.federated.runconfig import (
    CONFIG_OVERRIDES,
    CONFIG_PATH,
    OUTPUT_DIR,
    RUN_KEY,
    SIM_PARALLEL,
    SITE_CONFIGS,
    SOURCE_DESCRIBE,
)
from endofed.launch.flwr import (
    COMPLETED,
    env_path_with_venv,
    failed_run_message,
    flower_binary,
    flwr_run,
    last_run_status,
    write_connection,
)
from endofed.launch.processes import Child, LaunchError, flower_env, free_port, sigterm_as_interrupt, wait_for_port
from endofed.launch.stream import RoundCallback
from endofed.lineage.source import git_describe
from endofed.site_config import usable_cores

CONNECTION = "endofed-sim"
# Ray's shared-memory object store holds every message in flight, and the ServerApp's process maps what it
# touches (its RSS grows with it); Ray's own default is 30% of RAM. 2 GiB holds 3 sites' ViT-B fp32 weights both
# ways (347 MB each); beyond it Ray spills objects to disk (slower, not lost). docs/federation-at-scale.md
DEFAULT_OBJECT_STORE_MB = 2048
OBJECT_STORE_ENV = "RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES"  # flwr 1.42 passes no object-store size to ray.init


@dataclass(frozen=True)
class SimulationRequest:
    """What to simulate.

    Attributes:
        app_dir: the Flower app (folder with the pyproject.toml naming server.app / client.app).
        site_yamls: one site YAML per simulated hospital.
        config_path: experiment YAML.
        overrides: ``section.key=value`` overrides.
        out_dir: where the server writes checkpoints, ``rounds.jsonl`` and ``summary.json``, and Flower its state.
        cpus_per_site: CPU share of each simulated site (Ray resources).
        gpus_per_site: GPU share of each simulated site (0 on CPU machines).
        run_key: names the sites' local state folder (``federation/<run_key>``); '' = ``run-<Flower run id>``.
        log: where ``flwr run``'s streamed output goes ('None': this process's stdout).
        on_round: called at the start of each federated round with ``(round, rounds)`` (a progress bar).
        object_store_mb: bound on Ray's object store in MB (0 = Ray's default; an ``OBJECT_STORE_ENV`` set by the
            user wins).
    """

    app_dir: Path
    site_yamls: list[Path]
    config_path: Path
    overrides: list[str]
    out_dir: Path
    cpus_per_site: float = 1.0
    gpus_per_site: float = 0.0
    run_key: str = ""
    log: Path | None = None
    on_round: RoundCallback | None = None
    object_store_mb: int = DEFAULT_OBJECT_STORE_MB


def simulation_parallel(sites: int, cpus_per_site: float, cores: int) -> int:
    """How many simulated sites Ray runs at once: ``cores // cpus_per_site`` slots, at most ``sites``, at least 1.

    >>> simulation_parallel(100, 1.0, 2), simulation_parallel(3, 0.5, 16), simulation_parallel(10, 4.0, 2)
    (2, 3, 1)
    """
    if cpus_per_site <= 0:
        return max(1, sites)
    return max(1, min(sites, math.floor(cores / cpus_per_site)))


def object_store_env(object_store_mb: int) -> dict[str, str]:
    """The environment that bounds Ray's object store to ``object_store_mb`` MB (none for 0: Ray's default)."""
    if object_store_mb < 0:
        raise ConfigError(f"the object store bound must be >= 0 MB (0 = Ray's default), got {object_store_mb}")
    return {OBJECT_STORE_ENV: str(object_store_mb * 1_000_000)} if object_store_mb else {}


def engine_env(env: Mapping[str, str], cpus_per_site: float, object_store_mb: int) -> dict[str, str]:
    """``env`` plus the engine's defaults for what it does not set (a user's own setting wins).

    Each site's torch threads = its CPU share; Ray's object-store bound (``flwr-simulation``, the process of the
    ServerApp and of Ray's driver, inherits it from the SuperLink).
    """
    defaults = {THREADS_ENV: str(max(1, int(cpus_per_site))), **object_store_env(object_store_mb)}
    return {**defaults, **env}


def find_site_yamls(items: Sequence[Path]) -> list[Path]:
    """Site YAMLs from files and folders (a folder contributes its ``site_*.yaml``, sorted)."""
    found: list[Path] = []
    for item in items:
        if item.is_dir():
            found += sorted(item.glob("site_*.yaml"))
        elif item.is_file():
            found.append(item)
        else:
            raise ConfigError(f"no such site YAML or folder: {item}")
    if not found:
        raise ConfigError(f"no site_*.yaml found in {', '.join(map(str, items))}")
    return [p.resolve() for p in found]


def is_app_dir(folder: Path) -> bool:
    """Whether ``folder`` holds a pyproject.toml declaring a Flower app's components."""
    pyproject = folder / "pyproject.toml"
    try:
        return pyproject.is_file() and "[tool.flwr.app.components]" in pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def require_app_dir(folder: Path) -> Path:
    """``folder`` if it is a Flower app folder (:func:`is_app_dir`), else one clear ``ConfigError``."""
    if not is_app_dir(folder):
        raise ConfigError(f"{folder} is not the endofed app folder (no pyproject.toml with [tool.flwr.app.components])")
    return folder


def find_app_dir(start: Path) -> Path:
    """The nearest folder at or above ``start`` whose pyproject.toml declares the endofed Flower app."""
    for folder in [start, *start.parents]:
        if is_app_dir(folder):
            return folder
    raise ConfigError(f"no Flower app (pyproject.toml with [tool.flwr.app.components]) at or above {start}; use --app")


def validate_request(request: SimulationRequest) -> None:
    """Fail early, with one line, on a bad config or site YAML (before any process starts)."""
    cfg = load_config(request.config_path, request.overrides)
    require_app_dir(request.app_dir)
    for path in request.site_yamls:
        load_site_config(path)
    check_privacy_plan(cfg.federation)
    object_store_env(request.object_store_mb)
    if len(request.site_yamls) < cfg.federation.min_sites:
        raise ConfigError(
            f"federation.min_sites is {cfg.federation.min_sites} but {len(request.site_yamls)} site YAMLs were given"
        )


def run_simulation(request: SimulationRequest) -> dict[str, Any]:
    """Run the federation in simulation; returns ``summary.json`` with site names added.

    Raises:
        LaunchError: the SuperLink did not start, or the run did not finish ``completed``.
    """
    validate_request(request)
    out = request.out_dir.resolve()
    flwr_home = out / "flwr-home"
    env = engine_env(env_path_with_venv(flower_env(flwr_home)), request.cpus_per_site, request.object_store_mb)
    parallel = simulation_parallel(len(request.site_yamls), request.cpus_per_site, usable_cores())
    port = free_port()
    write_connection(flwr_home, CONNECTION, f"127.0.0.1:{port}")
    command = [
        flower_binary("flower-superlink"),
        "--insecure",
        "--simulation",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
        "--database",
        str(out / "superlink.db"),
    ]
    with sigterm_as_interrupt():
        superlink = Child("SuperLink", command, out / "logs" / "superlink.log", env)
        try:
            wait_for_port(superlink, port)
            run_config: dict[str, str | int | float] = {
                CONFIG_PATH: str(request.config_path.resolve()),
                CONFIG_OVERRIDES: ";".join(request.overrides),
                SITE_CONFIGS: ":".join(str(p) for p in request.site_yamls),
                OUTPUT_DIR: str(out),
                RUN_KEY: request.run_key,
                SOURCE_DESCRIBE: git_describe(request.app_dir) or "",
                SIM_PARALLEL: parallel,  # the server's default send window (server.stream.send_window)
            }
            federation = {
                "num-supernodes": len(request.site_yamls),
                "client-resources-num-cpus": request.cpus_per_site,
                "client-resources-num-gpus": request.gpus_per_site,
            }
            log = request.log or out / "logs" / "flwr-run.log"
            output = flwr_run(
                request.app_dir,
                CONNECTION,
                run_config,
                env,
                log,
                federation,
                quiet=request.log is not None,
                on_round=request.on_round,
            )
            run_id, status = last_run_status(CONNECTION, env)
        finally:
            superlink.stop()
    if status != COMPLETED:
        raise LaunchError(failed_run_message(run_id, status, output, superlink.log))
    return named_summary(out / SUMMARY_FILE, request.site_yamls)


def named_summary(path: Path, site_yamls: Sequence[Path]) -> dict[str, Any]:
    """``summary.json`` with each simulated site's name (its partition id indexes the site YAMLs)."""
    summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    names = [load_site_config(p).site_id for p in site_yamls]
    for metrics in summary.get("sites", {}).values():
        partition = metrics.get(PARTITION_ID)
        if partition is not None and 0 <= int(partition) < len(names):
            metrics["site"] = names[int(partition)]
    return summary
