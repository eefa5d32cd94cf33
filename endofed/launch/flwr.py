"""Driving the ``flwr`` CLI: a connection in a private FLWR_HOME, ``flwr run``, and the run's final status.

``flwr run`` exits 0 even when the run failed, so the status is read back with ``flwr ls --format json``
and only ``finished:completed`` counts as success.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as a package (a dependency of flwr, which endofed requires)
    import tomli as tomllib

from endofed.errors import ConfigError
from endofed.launch.processes import LaunchError
from endofed.launch.stream import RoundCallback, StreamResult, run_streamed

COMPLETED = "finished:completed"


def flower_binary(name: str) -> str:
    """Path of a Flower console script, preferring the one beside this Python (same environment)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise LaunchError(f"{name!r} not found: install endofed (with flwr) in this environment")
    return found


def toml_string(value: str) -> str:
    r"""``value`` as a TOML basic string that also survives Flower's ``key=value`` parser.

    Flower (``flwr.common.config.parse_config_args``, used for ``--node-config`` and ``--run-config``) cuts a
    value out with the regex ``"[^"]*"`` before its TOML parser sees it, so a ``"`` must not appear raw even
    when escaped: it is written ``\u0022``. Backslashes become ``\\`` and control characters ``\uXXXX``;
    other characters (spaces, ``'``, ``=``, non-ASCII) stay as they are.

    Raises:
        ConfigError: the text holds characters that are not valid Unicode (a file name that is not UTF-8).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{value!r} is not valid UTF-8 text, which Flower cannot carry; rename the file or folder"
        ) from None
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == '"' or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def write_connection(flwr_home: Path, name: str, address: str, root_certificates: Path | None = None) -> Path:
    """Write ``FLWR_HOME/config.toml`` with one SuperLink connection (TLS when a CA certificate is given)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f"default = {toml_string(name)}",
        "",
        f"[superlink.{name}]",
        f"address = {toml_string(address)}",
    ]
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {toml_string(str(root_certificates))}")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def key_values(items: Mapping[str, str | int | float]) -> str:
    """``--run-config`` / ``--node-config`` / ``--federation-config`` text: ``key="value" key2=3``.

    Strings are written with :func:`toml_string`, and the text is read back the way Flower's parser reads it
    (:func:`parse_like_flower`): a string that would not arrive unchanged raises instead of reaching the app
    altered.

    Raises:
        ConfigError: a string value does not survive Flower's parser.
        ValueError: a key that is not a bare TOML key (letters, digits, '-', '_').
    """
    parts = []
    for key, value in items.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            raise ValueError(f"config key must be letters, digits, '-' or '_', got {key!r}")
        if isinstance(value, bool):  # TOML booleans are lower case
            parts.append(f"{key}={'true' if value else 'false'}")
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # Flower passes 1.0 CPUs on as a float, which Ray refuses
        parts.append(f"{key}={toml_string(value) if isinstance(value, str) else value}")
    text = " ".join(parts)
    check_round_trip(text, {k: v for k, v in items.items() if isinstance(v, str)})
    return text


# How Flower 1.42 cuts ``key=value`` pairs out of a config argument (``flwr.common.config.parse_config_args``)
# before its TOML parser sees them. The library does not import flwr (ARCHITECTURE.md: only the glue does), so
# the cut is restated here; tests/launch/test_flower_config.py checks it against Flower's own parser.
_FLOWER_PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def parse_like_flower(text: str) -> dict[str, object]:
    """``text`` parsed as Flower parses one ``--run-config`` / ``--node-config`` argument.

    Raises:
        tomllib.TOMLDecodeError: the pairs do not form valid TOML.
    """
    return tomllib.loads("\n".join(f"{key} = {value}" for key, value in _FLOWER_PAIR.findall(text)))


def check_round_trip(text: str, strings: Mapping[str, str]) -> None:
    """Parse ``text`` as Flower does and require every entry of ``strings`` back unchanged.

    Raises:
        ConfigError: naming the first value Flower would read differently.
    """
    try:
        parsed = parse_like_flower(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Flower cannot parse the config text {text!r}: {exc}") from None
    for key, value in strings.items():
        if parsed.get(key) != value:
            raise ConfigError(f"{key}={value!r} would reach Flower as {parsed.get(key)!r}; rename it")


def flwr_run(
    app_dir: Path,
    connection: str,
    run_config: Mapping[str, str | int | float],
    env: Mapping[str, str],
    log: Path,
    federation_config: Mapping[str, str | int | float] | None = None,
    quiet: bool = False,
    on_round: RoundCallback | None = None,
) -> StreamResult:
    """``flwr run APP CONNECTION --stream``: all output appended to ``log``, shown on stdout unless ``quiet``.

    On stdout a traceback of the ServerApp is folded into its exception line (:mod:`endofed.launch.stream`).
    The exit code is not the run's status: Flower returns 0 for a failed run (see :func:`last_run_status`).
    """
    command = [
        flower_binary("flwr"),
        "run",
        str(app_dir),
        connection,
        "--run-config",
        key_values(run_config),
        "--stream",
    ]
    if federation_config:
        command += ["--federation-config", key_values(federation_config)]
    return run_streamed(command, dict(env), log, None if quiet else sys.stdout, on_round)


def failed_run_message(run_id: str, status: str, output: StreamResult, superlink_log: Path) -> str:
    """The one line for a run that did not end ``completed``: its status, the ServerApp's error, where to look."""
    cause = f": {output.last_exception}" if output.last_exception else ""
    return f"run {run_id} ended {status!r}, not {COMPLETED!r}{cause} (details in {output.log} and {superlink_log})"


def last_run_status(connection: str, env: Mapping[str, str]) -> tuple[str, str]:
    """``(run id, status)`` of the most recent run on the connection's SuperLink (``flwr ls``)."""
    result = subprocess.run(  # noqa: S603
        [flower_binary("flwr"), "ls", connection, "--format", "json"],
        env=dict(env), capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    try:
        runs = json.loads(result.stdout).get("runs", [])
    except json.JSONDecodeError:
        raise LaunchError(
            f"cannot read the run status from 'flwr ls': {result.stdout[-300:]} {result.stderr[-300:]}"
        ) from None
    if not runs:
        raise LaunchError("the SuperLink has no run: 'flwr run' did not submit one")
    latest = max(runs, key=lambda run: str(run.get("pending-at", "")))
    return str(latest.get("run-id")), str(latest.get("status"))


def env_path_with_venv(env: dict[str, str]) -> dict[str, str]:
    """Put this environment's bin folder first on PATH (SuperLink starts flower-superexec by name)."""
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
