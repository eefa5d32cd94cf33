"""``endofed data check``: validate a site's data, fill the cache, and produce its data passport.

Training runs the same check at every start-up (a fresh process per Flower message in deployment), in its fast
form: source files whose stat is unchanged since they were hashed are not read again (``cache/sources.json``,
:class:`~endofed.data.cache.SourceIndex`), and a passport whose content is unchanged is not rewritten.
``endofed data check`` always runs the full check (``full=True``): every source file is hashed again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.config import DataConfig, SiteConfig
from endofed.data.cache import SOURCE_INDEX, SourceIndex, VolumeCache
from endofed.data.guard import Sources, collect_sources, refuse_source_writes
from endofed.data.manifest import Case, load_cases
from endofed.data.passport import build_passport
from endofed.data.site import CaseResult, prepare_site
from endofed.io.jsonl import write_json

PASSPORT_FILE = "passport.json"
CACHE_DIR = "cache"
# Passport fields that differ between two checks of the same data (left out when deciding to rewrite it).
_VOLATILE_PASSPORT_FIELDS = ("created_utc",)


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


def site_sources(site: SiteConfig) -> SourceIndex:
    """The site's record of source-file digests and stats (site-local, next to the cache entries)."""
    return SourceIndex(site.work_dir / CACHE_DIR / SOURCE_INDEX)


def site_source_paths(site: SiteConfig, cases: Sequence[Case]) -> Sources:
    """What nothing may write to at ``site``: its images and their folders, manifest, labels and data_root."""
    images = [path for case in cases for path in (case.t1, case.t2)]
    return collect_sources(images, files=(site.manifest, site.labels_csv), folders=(site.data_root,))


def refuse_writes_into_sites(sites: Sequence[SiteConfig], targets: Sequence[tuple[str, Path]]) -> None:
    """Refuse (one line, nothing written) any ``(what, path)`` target on or inside a site's source data."""
    for site in sites:
        refuse_source_writes(targets, site_source_paths(site, load_cases(site)))


def _stable(passport: dict[str, Any]) -> dict[str, Any]:
    """The passport without the fields that change from one check to the next."""
    return {k: v for k, v in passport.items() if k not in _VOLATILE_PASSPORT_FIELDS}


def current_passport(path: Path, passport: dict[str, Any]) -> dict[str, Any] | None:
    """The passport at ``path`` if it says the same as ``passport`` (creation time aside), else ``None``."""
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return written if isinstance(written, dict) and _stable(written) == _stable(passport) else None


def check_site(
    site: SiteConfig,
    cfg: DataConfig,
    allow_failures: bool = False,
    passport_path: Path | None = None,
    on_start: Callable[[list[Case]], None] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
    full: bool = False,
    outputs: Sequence[tuple[str, Path]] = (),
) -> SiteCheck:
    """Validate and preprocess every case of a site, then write its passport (default: work dir).

    Args:
        site: the site.
        cfg: preprocessing settings.
        allow_failures: the passport is ``ready`` even if some cases failed (they are left out).
        passport_path: where to write the passport (default ``WORK_DIR/passport.json``).
        on_start: called with the cases before the first one is prepared (progress display).
        on_case: called after each case (progress display).
        full: hash every source file again and rewrite the passport (``endofed data check``). Otherwise a
            file whose stat is unchanged since it was hashed is not read, unless its case misses the cache,
            and a passport with unchanged content is kept as it is.
        outputs: further ``(what, path)`` files the caller will write (e.g. a preview), checked with the work
            dir and the passport against the site's source data before anything is written.

    Raises:
        DataError: the manifest or folder layout itself is unusable (individual bad cases do not raise), or an
            output (work dir, passport, ``outputs``) is a source file or inside a source folder.
    """
    cases = load_cases(site)
    path = passport_path if passport_path is not None else site.work_dir / PASSPORT_FILE
    targets = [("work_dir", site.work_dir), ("passport", path), *outputs]
    refuse_source_writes(targets, site_source_paths(site, cases))  # before anything is written
    if on_start is not None:
        on_start(cases)
    results = prepare_site(cases, cfg, site_cache(site), on_case=on_case, sources=site_sources(site), full=full)
    passport = build_passport(site.site_id, results, cfg, allow_failures=allow_failures)
    kept = None if full else current_passport(path, passport)
    if kept is None:
        write_json(path, passport)
    return SiteCheck(results=results, passport=kept if kept is not None else passport, passport_path=path)
