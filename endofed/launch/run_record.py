"""A deployment run's record in its folder: ``launch.json`` (the server config, overrides and the sites' run key).

``endofed-server`` writes it when a run starts (:func:`write_launch`, refusing a folder that already holds a run),
and ``endofed-server --resume RUN_DIR`` reads it back (:func:`read_launch`) to start the same run again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.config import ServerConfig, build, to_dict
from endofed.errors import ConfigError
from endofed.federated.protocol import STATE_FILE

LAUNCH_FILE = "launch.json"  # in the run folder: what --resume needs to start the same run again


@dataclass(frozen=True)
class Launch:
    """A run as it was started: the resolved server config, the extra overrides, and the sites' run key."""

    server: ServerConfig
    overrides: tuple[str, ...]
    run_key: str


def new_run_key(output_dir: Path) -> str:
    """A run key for a new run: the run folder's name (letters, digits, '-', '_' only) and 8 random hex digits."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", output_dir.resolve().name).strip("-")[:40] or "run"
    return f"{stem}-{secrets.token_hex(4)}"


def write_launch(launch: Launch) -> Path:
    """Record a new run in its folder; refuses a folder that already holds a run."""
    out = launch.server.output_dir
    for name in (LAUNCH_FILE, STATE_FILE):
        if (out / name).exists():
            raise ConfigError(
                f"{out} already holds a run ({name}); continue it with 'endofed-server --resume {out}' or set "
                "another output_dir in the server config"
            )
    out.mkdir(parents=True, exist_ok=True)
    record = {"server": to_dict(launch.server), "overrides": list(launch.overrides), "run_key": launch.run_key}
    path = out / LAUNCH_FILE
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def read_launch(run_dir: Path) -> Launch:
    """The run recorded in ``run_dir`` (for ``--resume``).

    Raises:
        ConfigError: the folder holds no run, or its record is unreadable (one line naming the file).
    """
    path = Path(run_dir) / LAUNCH_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no endofed-server run ({LAUNCH_FILE} missing): nothing to resume")
    try:
        return _launch_from_record(json.loads(path.read_text(encoding="utf-8")))
    except KeyError as exc:
        raise ConfigError(f"{path} is not a valid run record: it has no {exc}") from None
    except (ValueError, TypeError, AttributeError, OSError) as exc:  # ValueError: JSON, UTF-8, ConfigError
        raise ConfigError(f"{path} is not a valid run record: {exc}") from None


def _launch_from_record(record: dict[str, Any]) -> Launch:
    """A :class:`Launch` from the JSON of ``launch.json`` (``TypeError`` naming a wrong entry)."""
    if not isinstance(record, dict) or not isinstance(record["server"], dict):
        raise TypeError("expected an object with a 'server' object")
    server = build(ServerConfig, {k: v for k, v in record["server"].items() if v is not None}, "server")
    server = dataclasses.replace(server, **_paths(server))
    overrides, run_key = record["overrides"], record["run_key"]
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise TypeError(f"'overrides' must be a list of strings, got {overrides!r}")
    if not isinstance(run_key, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", run_key):
        raise TypeError(f"'run_key' must be letters, digits, '-' or '_', got {run_key!r}")
    return Launch(server, tuple(overrides), run_key)


def _paths(server: ServerConfig) -> dict[str, Any]:
    """The path fields of a server config read back from JSON, as paths."""
    names = ("ca_certificate", "server_certificate", "server_key", "experiment", "output_dir", "app_dir",
             "dashboard_token_file")  # fmt: skip
    fields: dict[str, Any] = {n: Path(v) for n in names if (v := getattr(server, n)) is not None}
    fields["site_public_keys"] = tuple(Path(p) for p in server.site_public_keys)
    return fields
