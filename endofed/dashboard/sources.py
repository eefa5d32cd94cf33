"""Gather what the dashboard shows from a run folder: records, site names, connections, passports, outcome.

Site names come from, in order: site YAMLs given to the dashboard (``--sites``), the site YAMLs the simulation
was submitted with (in the SuperLink database), and, in a deployment, the stem of the registered public key file
that matches the node's key (``launch.json``: ``keys/alpha.pub`` -> ``alpha``). Only names are taken from them;
no path is ever put into the view.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.dashboard import passports, superlink, view
from endofed.dashboard.records import (
    LAUNCH_JSON,
    STATE_JSON,
    SUPERLINK_DB,
    last_write,
    read_json,
    read_rounds,
    read_summary,
)

LOGGER = logging.getLogger(__name__)


@dataclass
class RunView:
    """Everything one page render needs (built fresh per request: a live run changes between requests)."""

    run_name: str
    kind: str
    status: view.Status
    outcome: str | None
    sites: list[view.SiteRow]
    timeline: list[view.TimelineRow]
    privacy: list[dict[str, str]]
    passports: list[passports.PassportView]
    records: list[dict[str, Any]]
    names: dict[str, str]


def site_names(site_yamls: Sequence[Path]) -> dict[str, str]:
    """``partition-K`` -> site id of the K-th site YAML (a YAML that no longer loads is left unnamed)."""
    from endofed.config import load_site_config

    names = {}
    for index, path in enumerate(site_yamls):
        try:
            names[f"partition-{index}"] = load_site_config(path).site_id
        except Exception as exc:  # a moved or edited YAML must not take the page down
            LOGGER.info("site YAML %d not readable: %s", index, type(exc).__name__)
    return names


def public_key_der(data: bytes) -> bytes | None:
    """A public key as DER SubjectPublicKeyInfo; ``None`` if ``data`` is no public key.

    Reads OpenSSH (the site's ``.pub`` file) and PEM (what the SuperLink records).
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    text = data.strip()
    try:
        key = (serialization.load_pem_public_key(text) if text.startswith(b"-----BEGIN")
               else serialization.load_ssh_public_key(text))  # fmt: skip
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_names(launch: dict[str, Any] | None, nodes: Sequence[superlink.NodeInfo]) -> dict[str, str]:
    """Deployment: ``node-N`` -> the stem of the registered public key file whose key is node N's.

    The key files are OpenSSH public keys and the SuperLink stores PEM, so both are compared as DER.
    """
    if not launch:
        return {}
    stems: dict[bytes, str] = {}
    for item in (launch.get("server") or {}).get("site_public_keys") or []:
        try:
            der = public_key_der(Path(item).read_bytes())
        except OSError:
            continue
        if der is not None:
            stems[der] = Path(item).stem
    names = {}
    for node in nodes:
        der = public_key_der(node.public_key)
        if der is not None and der in stems:
            names[f"node-{node.node_id}"] = stems[der]
    return names


def collect(run_dir: Path, site_yamls: Sequence[Path] = (), now: float | None = None) -> RunView:
    """Read ``run_dir`` now and build its view (tolerates a run folder with nothing in it yet)."""
    now = time.time() if now is None else now
    records, summary = read_rounds(run_dir), read_summary(run_dir)
    db = run_dir / SUPERLINK_DB
    nodes = superlink.read_nodes(db, now)
    launch = read_json(run_dir / LAUNCH_JSON)
    yamls = list(site_yamls) or ([] if launch else superlink.read_site_configs(db))
    names = {**key_names(launch, nodes), **site_names(yamls)}
    written = last_write(run_dir)
    status = view.run_status(records, summary, None if written is None else now - written)
    outcome = superlink.read_outcome(db) if summary is None else "completed"
    if outcome and outcome != "completed" and status.state != "finished":
        status = view.Status("ended", status.phase, status.round, status.completed, f"ended: {outcome}")
    state = read_json(run_dir / STATE_JSON) or {}
    if state.get("phase") and status.phase == "-":
        status = view.Status(status.state, str(state["phase"]), int(state.get("round", 0)), status.completed,
                             status.message)  # fmt: skip
    connected = {n.node_id: n.online for n in nodes}
    return RunView(
        run_name=run_dir.resolve().name,
        kind="deployment" if launch else "simulation",
        status=status,
        outcome=outcome,
        sites=view.site_rows(records, summary, names, connected),
        timeline=view.timeline(records),
        privacy=view.privacy_rows(records),
        passports=passports.find_passports(run_dir, yamls),
        records=records,
        names=names,
    )
