"""Pure functions from a run folder's records to the dashboard's view model (no I/O, no web framework).

Inputs are what the server writes: the ``rounds.jsonl`` records (events ``train``, ``evaluate``, ``privacy``,
``resume``; per-site entries carry ``node``, in simulation also ``partition-id``), ``summary.json`` once the run
has finished, and what :mod:`.sources` found out about site names and connections. Every string that came from a
site is passed through :func:`endofed.dashboard.safe.safe_text`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from endofed.dashboard.safe import safe_text
from endofed.federated.protocol import NUM_EXAMPLES, PARTITION_ID, PHASES, TRAIN_LOSS

Record = Mapping[str, Any]
STALE_S = 600.0  # a live run with no new record for this long is reported as idle


@dataclass(frozen=True)
class Status:
    """Where the run is: ``state`` (waiting, running, idle, finished), its phase and round, rounds done per phase."""

    state: str
    phase: str
    round: int
    completed: dict[str, int]
    message: str


@dataclass
class SiteRow:
    """One site's line in the per-site table (numbers already formatted)."""

    name: str
    connected: str = "unknown"
    last_round: str = "-"
    volumes: str = "-"
    loss: str = "-"
    bytes_down: str = "-"
    bytes_up: str = "-"
    norm_ratio: str = "-"
    rejected: int = 0
    reason: str = ""
    failed: int = 0
    auc: str = "-"
    nodes: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class TimelineRow:
    """One round of one phase: who trained, what was dropped, whether it was aggregated, epsilon after it."""

    phase: str
    round: int
    trained: int
    failures: int
    rejected: int
    aggregated: str
    mean_loss: str
    evaluated: str
    epsilon: str
    seconds: str


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``-`` for missing, NaN or non-numbers (``0.12345`` -> ``"0.123"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "-"
    return f"{value:.{digits}f}"


def fmt_bytes(value: Any) -> str:
    """Bytes in decimal units (``2578176`` -> ``"2.58 MB"``, ``512`` -> ``"512 B"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{int(value)} B"


def node_partitions(records: Sequence[Record]) -> dict[str, int]:
    """Simulation: node id -> partition id, from per-site entries that carry both."""
    found: dict[str, int] = {}
    for record in records:
        for entry in record.get("sites") or []:
            if isinstance(entry, Mapping) and PARTITION_ID in entry and "node" in entry:
                found[str(entry["node"])] = int(entry[PARTITION_ID])
    return found


def site_key(entry: Mapping[str, Any], partitions: Mapping[str, int]) -> str:
    """The key a site is known by: ``partition-K`` in simulation, ``node-N`` in a deployment."""
    if PARTITION_ID in entry:
        return f"partition-{int(entry[PARTITION_ID])}"
    node = str(entry.get("node", "?"))
    return f"partition-{partitions[node]}" if node in partitions else f"node-{node}"


def default_name(key: str) -> str:
    """A name for a site no source named (``partition-2`` -> ``site 2``; long node ids are cut)."""
    kind, _, ident = key.partition("-")
    if kind == "partition":
        return f"site {ident}"
    return f"node {ident[:8]}…" if len(ident) > 9 else f"node {ident}"


def run_status(records: Sequence[Record], summary: Mapping[str, Any] | None, age_s: float | None) -> Status:
    """The run's state from its records, whether ``summary.json`` exists and how old the last record is."""
    completed = dict.fromkeys(PHASES, 0)
    phase, last = "-", 0
    for record in records:
        if record.get("event") != "train":
            continue
        phase, last = str(record.get("phase", "-")), int(record.get("round", 0))
        if record.get("aggregated", True) and phase in completed:
            completed[phase] = max(completed[phase], last)
    if summary is not None:
        return Status("finished", phase, last, completed, "finished: summary.json written")
    if not records:
        return Status("waiting", phase, last, completed, "waiting for the first round")
    if age_s is not None and age_s > STALE_S:
        minutes = int(age_s // 60)
        return Status("idle", phase, last, completed, f"no new round for {minutes} min (stopped, or a long round)")
    return Status("running", phase, last, completed, f"running: {phase} round {last}")


def _train_entry(row: SiteRow, record: Record, entry: Mapping[str, Any], totals: dict[str, list[float]]) -> None:
    """Fold one site's train reply into its row (last round's values, byte totals)."""
    row.last_round = f"{record.get('phase', '-')} {record.get('round', '?')}"
    row.volumes = fmt_number(entry.get(NUM_EXAMPLES), 0)
    row.loss = fmt_number(entry.get(TRAIN_LOSS), 4)
    row.norm_ratio = fmt_number(entry.get("update_norm_ratio"), 4)
    total = totals.setdefault(row.name, [0.0, 0.0])
    for i, key in enumerate(("bytes_down", "bytes_up")):
        value = entry.get(key)
        if isinstance(value, (int, float)):
            total[i] += value


def site_rows(
    records: Sequence[Record],
    summary: Mapping[str, Any] | None,
    names: Mapping[str, str],
    connected: Mapping[str, bool],
) -> list[SiteRow]:
    """The per-site table: last round, volumes, loss, bytes (totals), norm ratio, rejections, failures, AUC.

    Args:
        records: the round records.
        summary: ``summary.json`` or ``None``.
        names: site key (:func:`site_key`) -> display name.
        connected: node id -> whether the SuperLink sees it online now.
    """
    partitions = node_partitions(records)
    rows: dict[str, SiteRow] = {}
    totals: dict[str, list[float]] = {}

    def row_of(entry: Mapping[str, Any]) -> SiteRow:
        key = site_key(entry, partitions)
        row = rows.setdefault(key, SiteRow(name=safe_text(names.get(key) or default_name(key), 40)))
        if "node" in entry:
            row.nodes.add(str(entry["node"]))
        return row

    for record in records:
        event = record.get("event")
        for entry in record.get("sites") or []:
            if isinstance(entry, Mapping) and event == "train":
                _train_entry(row_of(entry), record, entry, totals)
            elif isinstance(entry, Mapping):
                row_of(entry)
        for entry in record.get("rejected") or []:
            if isinstance(entry, Mapping):
                row = row_of(entry)
                row.rejected += 1
                row.reason = safe_text(entry.get("reason", ""))
        for entry in record.get("failed") or []:
            if isinstance(entry, Mapping):
                row = row_of(entry)
                row.failed += 1
                row.reason = safe_text(f"failed ({entry.get('code', '?')}): {entry.get('reason', '')}")
    for node, metrics in (summary or {}).get("sites", {}).items():
        if isinstance(metrics, Mapping):
            row_of({**metrics, "node": node}).auc = fmt_number(metrics.get("auc"))
    for row in rows.values():
        down, up = totals.get(row.name, [None, None])
        row.bytes_down, row.bytes_up = fmt_bytes(down), fmt_bytes(up)
        seen = [connected[n] for n in row.nodes if n in connected]
        row.connected = "unknown" if not seen else ("yes" if any(seen) else "no")
    return sorted(rows.values(), key=lambda r: r.name)


def timeline(records: Sequence[Record]) -> list[TimelineRow]:
    """One row per (phase, round), in run order, merging its train, evaluate and privacy records."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        if record.get("event") not in ("train", "evaluate", "privacy"):
            continue
        slot = rows.setdefault((str(record.get("phase", "-")), int(record.get("round", 0))), {})
        slot[str(record["event"])] = record
    out = []
    for (phase, number), slot in rows.items():
        train, evaluate, privacy = slot.get("train", {}), slot.get("evaluate"), slot.get("privacy")
        losses = [e[TRAIN_LOSS] for e in train.get("sites") or [] if isinstance(e.get(TRAIN_LOSS), (int, float))]
        aggregated = "-" if not train else ("yes" if train.get("aggregated", True) else "no")
        out.append(
            TimelineRow(
                phase=phase,
                round=number,
                trained=len(train.get("sites") or []),
                failures=int(train.get("failures", 0) or 0),
                rejected=len(train.get("rejected") or []),
                aggregated=aggregated,
                mean_loss=fmt_number(sum(losses) / len(losses), 4) if losses else "-",
                evaluated=str(len(evaluate.get("sites") or [])) if evaluate else "-",
                epsilon=fmt_number(privacy.get("epsilon"), 3) if privacy else "-",
                seconds=fmt_number(train.get("round_seconds"), 1),
            )
        )
    return out


def privacy_rows(records: Sequence[Record]) -> list[dict[str, str]]:
    """The DP table: epsilon (and delta) spent after each round, whether it was released, sites clipped."""
    return [
        {
            "phase": safe_text(r.get("phase", "-"), 20),
            "round": str(r.get("round", "?")),
            "epsilon": fmt_number(r.get("epsilon"), 3),
            "delta": f"{r['delta']:g}" if isinstance(r.get("delta"), (int, float)) else "-",
            "released": "yes" if r.get("released") else "no",
            "clipped": f"{r.get('clipped_sites', 0)} of {len(r.get('update_norms') or [])}",
            "noise": fmt_number(r.get("noise_multiplier"), 2),
        }
        for r in records
        if r.get("event") == "privacy"
    ]


def loss_series(records: Sequence[Record], names: Mapping[str, str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Phase -> site name -> [(round, train loss)], for the loss plot."""
    partitions = node_partitions(records)
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for record in records:
        if record.get("event") != "train":
            continue
        for entry in record.get("sites") or []:
            loss = entry.get(TRAIN_LOSS)
            if isinstance(loss, (int, float)) and loss == loss:
                key = site_key(entry, partitions)
                name = safe_text(names.get(key) or default_name(key), 40)
                phase = series.setdefault(str(record.get("phase", "-")), {})
                phase.setdefault(name, []).append((int(record.get("round", 0)), float(loss)))
    return series


def bytes_series(records: Sequence[Record]) -> list[tuple[str, float, float]]:
    """[(``"pretrain 1"``, bytes down, bytes up)] per train round, summed over the sites, for the bytes plot."""
    out = []
    for record in records:
        if record.get("event") == "train":
            sites = [e for e in record.get("sites") or [] if isinstance(e, Mapping)]
            down = sum(float(e.get("bytes_down", 0) or 0) for e in sites)
            up = sum(float(e.get("bytes_up", 0) or 0) for e in sites)
            out.append((f"{record.get('phase', '-')} {record.get('round', '?')}", down, up))
    return out
