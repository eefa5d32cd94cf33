"""``endofed data check``: validate a site's data, fill the cache, and produce its data passport."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.config import DataConfig, SiteConfig
from endofed.data.cache import VolumeCache
from endofed.data.manifest import Case, load_cases
from endofed.data.passport import build_passport
from endofed.data.site import CaseResult, prepare_site
from endofed.errors import ConfigError

PASSPORT_FILE = "passport.json"
CACHE_DIR = "cache"


@dataclass(frozen=True)
class SiteCheck:
    """Result of checking one site.

    Attributes:
        results: one entry per case (usable or failed with its reason).
        passport: the aggregate passport (shareable: no paths, no subject ids).
        passport_path: where the passport JSON was written.
    """

    results: list[CaseResult]
    passport: dict[str, Any]
    passport_path: Path


def site_cache(site: SiteConfig) -> VolumeCache:
    """The preprocessing cache of a site (inside its work dir)."""
    return VolumeCache(site.work_dir / CACHE_DIR)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def check_site(
    site: SiteConfig,
    cfg: DataConfig,
    allow_failures: bool = False,
    passport_path: Path | None = None,
    on_start: Callable[[list[Case]], None] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
) -> SiteCheck:
    """Validate and preprocess every case of a site, then write its passport (default: work dir).

    Raises:
        DataError: the manifest or folder layout itself is unusable (individual bad cases do not raise).
    """
    if site.work_dir.resolve().is_relative_to(site.data_root.resolve()):
        raise ConfigError(
            f"work_dir {site.work_dir} is inside data_root {site.data_root}: source data is read-only, "
            "choose a work_dir outside it"
        )
    cases = load_cases(site)
    if on_start is not None:
        on_start(cases)
    results = prepare_site(cases, cfg, site_cache(site), on_case=on_case)
    passport = build_passport(site.site_id, results, cfg, allow_failures=allow_failures)
    path = passport_path if passport_path is not None else site.work_dir / PASSPORT_FILE
    write_json(path, passport)
    return SiteCheck(results=results, passport=passport, passport_path=path)
