"""Best-effort, read-only look into the run's SuperLink database (``RUN_DIR/superlink.db``).

The SuperLink records which SuperNodes are online (``node``: status, ``online_until``, public key), the run's
config (``run.override_config``: in simulation the site YAMLs, which name the sites) and how the run ended
(``task.sub_status``: completed or failed). This is Flower's internal schema, so every read is guarded: a missing
database, table or column yields nothing and the dashboard falls back to the server's own files.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodeInfo:
    """One SuperNode as the SuperLink knows it."""

    node_id: str
    online: bool
    public_key: bytes


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of ``sql`` on ``db`` opened read-only; empty on any database error."""
    if not db.is_file():
        return []
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return list(connection.execute(sql))
        finally:
            connection.close()
    except sqlite3.Error:
        return []


def is_online(status: object, online_until: object, now: float) -> bool:
    """Whether a node counts as connected: status ``online`` and its heartbeat deadline not passed."""
    try:
        return status == "online" and float(str(online_until)) > now
    except ValueError:
        return False


def unsigned_node_id(stored: object) -> str:
    """A node id as Flower reports it (unsigned 64-bit) from the SuperLink's SQLite column (signed 64-bit).

    Example: ``-6424379806806493230`` is node ``12022364266903058386`` (``+ 2**64``).
    """
    try:
        value = int(str(stored))
    except ValueError:
        return str(stored)
    return str(value + 2**64 if value < 0 else value)


def read_nodes(db: Path, now: float) -> list[NodeInfo]:
    """The SuperNodes the SuperLink has registered, with whether each is online at ``now``."""
    rows = _query(db, "SELECT node_id, status, online_until, public_key FROM node")
    return [
        NodeInfo(
            unsigned_node_id(node),
            is_online(status, until, now),
            key if isinstance(key, bytes) else str(key or "").encode(),
        )
        for node, status, until, key in rows
    ]


def read_site_configs(db: Path) -> list[Path]:
    """Simulation: the site YAMLs of the last run submitted (simulated site k reads YAML k)."""
    rows = _query(db, "SELECT override_config FROM run ORDER BY rowid DESC LIMIT 1")
    if not rows:
        return []
    try:
        value = json.loads(str(rows[0][0])).get("site-configs", "")
    except (ValueError, AttributeError):
        return []
    return [Path(p) for p in str(value).split(":") if p]


def read_outcome(db: Path) -> str | None:
    """How the last run ended according to the SuperLink (``completed``, ``failed``, ...), ``None`` if not yet."""
    rows = _query(db, "SELECT sub_status, finished_at FROM task ORDER BY rowid DESC LIMIT 1")
    if not rows or rows[0][1] in (None, "", "None"):
        return None
    return str(rows[0][0] or "") or None
