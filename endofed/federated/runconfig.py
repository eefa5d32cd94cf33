"""Flower run-config keys of endofed and their translation into the typed config (no flwr import).

Flower's run config carries scalars only (``[tool.flwr.app.config]`` in pyproject.toml, overridable with
``flwr run --run-config``). endofed puts the YAML path and a few overrides there, and everything else comes
from that YAML through :func:`endofed.config.load_config`, the one config parser.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from endofed.config import ExperimentConfig, load_config
from endofed.errors import ConfigError

CONFIG_PATH = "config-path"  # experiment YAML, relative to the app directory (or absolute)
CONFIG_OVERRIDES = "config-overrides"  # ';'-separated section.key=value overrides
SITE_CONFIGS = "site-configs"  # simulation: os.pathsep-separated site YAMLs, site k = partition k
OUTPUT_DIR = "output-dir"  # server: where checkpoints and the round log go ('' = runs/federation/run-<id>)
RUN_KEY = "run-key"  # names the sites' local state folder (federation/<key>); '' = run-<Flower run id>
RESUME = "resume"  # server: continue the run saved in output-dir (its server_state.safetensors)
SOURCE_DESCRIBE = "source-describe"  # the launcher's git describe of its checkout, for model cards ('' = unknown)
SIM_PARALLEL = "simulation-parallel"  # simulation: sites the engine runs at once (its CPU slots); 0 = unknown
NODE_SITE_CONFIG = "site-config"  # deployment: the SuperNode's --node-config key naming its site YAML


def split_overrides(text: str) -> list[str]:
    """``"a.b=1; c.d=[1,2]"`` -> ``["a.b=1", "c.d=[1,2]"]`` (empty items dropped)."""
    return [item.strip() for item in text.split(";") if item.strip()]


def experiment_config(run_config: Mapping[str, object], app_dir: Path) -> ExperimentConfig:
    """The experiment config named by a run config (path relative to the app directory)."""
    path = Path(str(run_config.get(CONFIG_PATH, "configs/tiny.yaml")))
    if not path.is_absolute():
        path = app_dir / path
    return load_config(path, split_overrides(str(run_config.get(CONFIG_OVERRIDES, ""))))


def site_config_path(node_config: Mapping[str, object], run_config: Mapping[str, object]) -> Path:
    """The site YAML of this node: ``--node-config site-config=...`` (deployment) or the partition's entry.

    Raises:
        ConfigError: neither is available, the node config's value is not a path, or the partition has no
            site YAML.
    """
    if NODE_SITE_CONFIG in node_config:
        value = node_config[NODE_SITE_CONFIG]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"--node-config {NODE_SITE_CONFIG} must be the site YAML's path as a quoted string, got {value!r}"
            )
        return Path(value)  # exactly as given: endofed-client passes the absolute path (endofed.launch.flwr)
    sites = [s for s in str(run_config.get(SITE_CONFIGS, "")).split(os.pathsep) if s]
    partition = node_config.get("partition-id")
    if partition is None or not sites:
        raise ConfigError(
            "this node has no site config: start the SuperNode with --node-config 'site-config=\"/abs/site.yaml\"' "
            f"or give the run config key {SITE_CONFIGS!r} in simulation"
        )
    index = int(str(partition))
    if index >= len(sites):
        raise ConfigError(f"simulation partition {index} has no site YAML ({len(sites)} given in {SITE_CONFIGS!r})")
    return Path(sites[index])
