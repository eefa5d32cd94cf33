"""Prepare a site's cases: validate every case, preprocess it once into the cache, keep per-case facts.

This is what ``endofed data check`` runs, and what training runs before reading the cache. A case that
fails is kept with its error (and left out of training); the source files are only read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endofed.config import DataConfig
from endofed.data.cache import VolumeCache, cache_key, file_digest
from endofed.data.geometry import grid_extent_mm
from endofed.data.manifest import Case
from endofed.data.nifti import Volume, load_volume
from endofed.data.preprocess import MODALITIES, overlap_fraction, preprocess_case
from endofed.errors import DataError

INTENSITY_PERCENTILES = (1.0, 50.0, 99.0)


@dataclass(frozen=True)
class CaseResult:
    """Outcome of preparing one case.

    Attributes:
        case: the manifest entry.
        key: cache key when the case is usable, else ``None``.
        error: why the case is unusable, else ``None``.
        facts: source facts per modality and the T1/T2 overlap (aggregated into the data passport).
    """

    case: Case
    key: str | None = None
    error: DataError | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the case can be used for training."""
        return self.error is None


def volume_facts(volume: Volume) -> dict[str, Any]:
    """Header and intensity facts of one source volume (no path, no identifiers)."""
    p_low, p_mid, p_high = np.percentile(volume.array, INTENSITY_PERCENTILES)
    return {
        "orientation": volume.orientation,
        "spacing_mm": [round(float(v), 4) for v in volume.spacing],
        "shape": list(volume.shape),
        "fov_mm": [round(float(v), 2) for v in grid_extent_mm(volume.affine, volume.shape)],
        "dtype": volume.source_dtype,
        "intensity_percentiles": [float(p_low), float(p_mid), float(p_high)],
    }


def _digests(case: Case) -> dict[str, str | None]:
    """Content hash of each modality's file (``None`` when the modality is absent)."""
    result: dict[str, str | None] = {}
    for name in MODALITIES:
        path: Path | None = getattr(case, name)
        if path is None:
            result[name] = None
            continue
        if not path.is_file():
            raise DataError(f"missing file: {path}", "missing_file")
        try:
            result[name] = file_digest(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}", "unreadable") from None
    return result


def _preprocess_into_cache(case: Case, key: str, cfg: DataConfig, cache: VolumeCache) -> dict[str, Any]:
    """Load, preprocess and store one case; return its facts."""
    volumes = {name: (load_volume(p) if (p := getattr(case, name)) is not None else None) for name in MODALITIES}
    try:
        pre = preprocess_case(volumes["t1"], volumes["t2"], cfg)
    except DataError as exc:  # name the files: the pure preprocessing step does not know them
        raise DataError(f"{exc} [T1: {case.t1}, T2: {case.t2}]", exc.code) from None
    facts: dict[str, Any] = {name: volume_facts(v) for name, v in volumes.items() if v is not None}
    facts["overlap_fraction"] = overlap_fraction(pre)
    meta = {"affine": pre.affine.tolist(), "facts": facts, "label": case.label}
    cache.put(key, pre.image.astype(cfg.cache_dtype, copy=False), pre.mask, meta)
    return facts


def prepare_case(case: Case, cfg: DataConfig, cache: VolumeCache, digests: dict[str, str | None]) -> CaseResult:
    """Preprocess one case into the cache unless already there; never raises ``DataError``."""
    try:
        key = cache_key(digests["t1"], digests["t2"], cfg)
        if cache.contains(key):
            facts = cache.get(key).meta["facts"]
        else:
            facts = _preprocess_into_cache(case, key, cfg, cache)
    except DataError as exc:
        return CaseResult(case, error=exc)
    return CaseResult(case, key=key, facts=facts)


def prepare_site(
    cases: Sequence[Case],
    cfg: DataConfig,
    cache: VolumeCache,
    on_case: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Validate and preprocess every case; failures are returned, not raised.

    A file whose bytes equal a file of an earlier case (e.g. the same scan filed under two subjects,
    which would leak between splits) fails as ``duplicate_image``.

    Args:
        cases: the site's cases (``manifest.load_cases``).
        cfg: preprocessing settings.
        cache: where preprocessed cases are stored.
        on_case: called after each case (progress display).

    Returns:
        One result per case, in input order.
    """
    results = []
    owner: dict[str, str] = {}  # file digest -> first subject that used it
    for case in cases:
        try:
            digests = _digests(case)
            if digests["t1"] is not None and digests["t1"] == digests["t2"]:
                raise DataError(f"T1 and T2 of subject {case.subject_id!r} are the same image", "duplicate_image")
            for name, digest in digests.items():
                if digest is None:
                    continue
                first = owner.setdefault(digest, case.subject_id)
                if first != case.subject_id:
                    raise DataError(
                        f"{name.upper()} file {getattr(case, name)} is identical to a file of subject {first!r}",
                        "duplicate_image",
                    )
            result = prepare_case(case, cfg, cache, digests)
        except DataError as exc:
            result = CaseResult(case, error=exc)
        results.append(result)
        if on_case is not None:
            on_case(result)
    return results
