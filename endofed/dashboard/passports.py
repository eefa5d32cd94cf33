"""The sites' data passports on the dashboard: found where the run's operator can see them, shown field by field.

A passport (:mod:`endofed.data.passport`) holds aggregates only. The server is not sent them: the dashboard shows
``RUN_DIR/passports/*.json`` (where an operator puts the passports the hospitals shared) and, in a simulation on
this machine, each site's ``WORK_DIR/passport.json``. Only known aggregate fields are shown, never the raw file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.dashboard.records import PASSPORTS_DIR, read_json
from endofed.dashboard.safe import safe_text

LOGGER = logging.getLogger(__name__)
COUNTS = ("duplicates", "near_duplicates", "content_duplicates")


@dataclass(frozen=True)
class PassportView:
    """One site's passport as label/value rows."""

    site: str
    ready: str
    rows: list[tuple[str, str]]


def _counts(value: Any) -> str:
    """``{"LAS": 3, "RAS": 1}`` -> ``"LAS 3, RAS 1"`` (numbers only; anything else is dropped)."""
    if not isinstance(value, Mapping):
        return "-"
    parts = [f"{safe_text(k, 24)} {v}" for k, v in value.items() if isinstance(v, (int, float))]
    return ", ".join(parts) or "none"


def passport_view(passport: Mapping[str, Any]) -> PassportView:
    """The shown fields of a passport: cases, labels, modalities, orientations, overlap, duplicates, failures."""
    cases = passport.get("cases") if isinstance(passport.get("cases"), Mapping) else {}
    rows = [("cases", _counts(cases))]
    for name, summary in sorted((passport.get("modalities") or {}).items()):
        if isinstance(summary, Mapping):
            present = f"{summary.get('present', '-')} present, {summary.get('missing', '-')} missing"
            rows.append((f"{safe_text(name, 8)}", f"{present}; orientations {_counts(summary.get('orientations'))}"))
    overlap = passport.get("t1_t2_overlap")
    if isinstance(overlap, Mapping):
        rows.append(("T1/T2 overlap", _counts(overlap)))
    rows.append(("duplicates", _counts({k: passport.get(k) for k in COUNTS})))
    rows.append(("failures", _counts(passport.get("failures"))))
    rows.append(("created", safe_text(passport.get("created_utc", "-"), 32)))
    ready = passport.get("ready")
    return PassportView(safe_text(passport.get("site_id", "?"), 40), "-" if ready is None else str(bool(ready)), rows)


def find_passports(run_dir: Path, site_yamls: Sequence[Path] = ()) -> list[PassportView]:
    """Passports in ``RUN_DIR/passports/``, then those of the given sites' work dirs (one per site name)."""
    files = sorted((run_dir / PASSPORTS_DIR).glob("*.json"))
    if site_yamls:
        from endofed.config import load_site_config

        for path in site_yamls:
            try:
                files.append(load_site_config(path).work_dir / "passport.json")
            except Exception as exc:  # a moved site YAML: no passport from it
                LOGGER.info("site YAML not readable: %s", type(exc).__name__)
    found: dict[str, PassportView] = {}
    for file in files:
        passport = read_json(file)
        if passport is not None:
            shown = passport_view(passport)
            found.setdefault(shown.site, shown)
    return sorted(found.values(), key=lambda p: p.site)
