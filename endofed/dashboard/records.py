"""Read the server's files in a run folder, tolerating a live run (a half-written last line, a missing file)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from endofed.federated.protocol import ROUNDS_FILE, SUMMARY_FILE

STATE_JSON = "server_state.json"  # the metadata of the last completed round's server state
LAUNCH_JSON = "launch.json"  # what endofed-server was started with (deployment only)
SUPERLINK_DB = "superlink.db"
PASSPORTS_DIR = "passports"  # where an operator puts the sites' data passports (<site>.json)


def parse_rounds(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON objects of ``rounds.jsonl`` lines; blank lines and a line still being written are skipped."""
    records = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the server is appending this line right now
        if isinstance(record, dict):
            records.append(record)
    return records


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or ``None`` when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """The round records of a run folder (empty before the first round)."""
    try:
        text = (run_dir / ROUNDS_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    return parse_rounds(text.splitlines())


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` (written once, when the run has finished), or ``None``."""
    return read_json(run_dir / SUMMARY_FILE)


def last_write(run_dir: Path) -> float | None:
    """When ``rounds.jsonl`` last changed (Unix time), or ``None`` without one."""
    try:
        return (run_dir / ROUNDS_FILE).stat().st_mtime
    except OSError:
        return None
