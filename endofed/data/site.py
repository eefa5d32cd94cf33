"""Prepare a site's cases: validate every case, preprocess it once into the cache, keep per-case facts.

This is what ``endofed data check`` runs, and what training runs before reading the cache. A case that
fails is kept with its error (and left out of training); the source files are only read. With a
:class:`~endofed.data.cache.SourceIndex`, an unchanged source file (same stat) is not hashed again unless its
case misses the cache; preprocessing (MONAI, nibabel) is imported only when a case has to be preprocessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from endofed.config import DataConfig
from endofed.data.cache import SourceIndex, VolumeCache, cache_key, file_digest
from endofed.data.manifest import MODALITIES, Case
from endofed.errors import DataError
from endofed.io.files import special_file
from endofed.io.hashing import array_sha256

if TYPE_CHECKING:
    from endofed.data.nifti import Volume

INTENSITY_PERCENTILES = (1.0, 50.0, 99.0)


@dataclass(frozen=True)
class CaseResult:
    """Outcome of preparing one case.

    Attributes:
        case: the manifest entry.
        key: cache key when the case is usable, else ``None``.
        error: why the case is unusable, else ``None``.
        facts: source facts per modality and the T1/T2 overlap (aggregated into the data passport).
        content: digest of each modality's decoded voxels (header-independent; local only, never in the
            passport): the same scan re-saved with another header under another subject id has the same one.
        thumbnail: per channel, a coarse thumbnail of the preprocessed case (:mod:`endofed.data.similarity`).
        near_duplicate: a warning when the case looks like an earlier one (a rescaled or re-oriented copy); the
            case stays usable, the passport counts it.
    """

    case: Case
    key: str | None = None
    error: DataError | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    content: dict[str, str] = field(default_factory=dict)
    thumbnail: list[list[float] | None] = field(default_factory=list)
    near_duplicate: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the case can be used for training."""
        return self.error is None


def volume_facts(volume: Volume) -> dict[str, Any]:
    """Header and intensity facts of one source volume (no path, no identifiers)."""
    from endofed.data.geometry import grid_extent_mm

    p_low, p_mid, p_high = np.percentile(volume.array, INTENSITY_PERCENTILES)
    return {
        "orientation": volume.orientation,
        "spacing_mm": [round(float(v), 4) for v in volume.spacing],
        "shape": list(volume.shape),
        "fov_mm": [round(float(v), 2) for v in grid_extent_mm(volume.affine, volume.shape)],
        "dtype": volume.source_dtype,
        "intensity_percentiles": [float(p_low), float(p_mid), float(p_high)],
    }


def _digest(path: Path, sources: SourceIndex | None, trust: bool) -> tuple[str, bool]:
    """A source file's SHA-256, and whether it was taken from ``sources`` (stat unchanged) without reading."""
    if sources is None:
        return file_digest(path), False
    recorded = sources.lookup(path) if trust else None
    return (recorded, True) if recorded is not None else (sources.hash(path), False)


def _digests(case: Case, sources: SourceIndex | None = None, trust: bool = False) -> tuple[dict[str, str | None], bool]:
    """Content hash of each modality's file (``None`` when absent), and whether any came from the index unread.

    With ``trust``, a file whose stat is unchanged since ``sources`` recorded it is not read again.
    """
    result: dict[str, str | None] = {}
    recalled = False
    for name in MODALITIES:
        path: Path | None = getattr(case, name)
        if path is None:
            result[name] = None
            continue
        if not path.is_file():
            if special_file(path):
                raise DataError(f"not a regular file (a folder, FIFO or device): {path}", "not_a_file")
            raise DataError(f"missing file: {path}", "missing_file")
        try:
            result[name], from_index = _digest(path, sources, trust)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}", "unreadable") from None
        recalled = recalled or from_index
    return result, recalled


def _case_digests(
    case: Case, cfg: DataConfig, cache: VolumeCache, sources: SourceIndex | None, full: bool
) -> dict[str, str | None]:
    """The digests that key a case: from the index when its files are unchanged and the key is cached.

    A digest taken from the index is only trusted for a cache hit: before a case is preprocessed (cache miss)
    its files are hashed again, so the entry is keyed by the bytes that were actually read.
    """
    digests, recalled = _digests(case, sources, trust=not full)
    if recalled and not cache.contains(cache_key(digests["t1"], digests["t2"], cfg)):
        digests, _ = _digests(case, sources, trust=False)
    return digests


def _preprocess_into_cache(case: Case, key: str, cfg: DataConfig, cache: VolumeCache) -> dict[str, Any]:
    """Load, preprocess and store one case; return its cache metadata (imports the preprocessing: MONAI, nibabel)."""
    from endofed.data.nifti import load_volume
    from endofed.data.preprocess import overlap_fraction, preprocess_case
    from endofed.data.similarity import thumbnail

    volumes = {name: (load_volume(p, cfg) if (p := getattr(case, name)) is not None else None) for name in MODALITIES}
    try:
        pre = preprocess_case(volumes["t1"], volumes["t2"], cfg)
    except DataError as exc:  # name the files: the pure preprocessing step does not know them
        raise DataError(f"{exc} [T1: {case.t1}, T2: {case.t2}]", exc.code) from None
    facts: dict[str, Any] = {name: volume_facts(v) for name, v in volumes.items() if v is not None}
    facts["overlap_fraction"] = overlap_fraction(pre)
    content = {name: array_sha256(v.array) for name, v in volumes.items() if v is not None}
    meta = {"affine": pre.affine.tolist(), "facts": facts, "content": content, "label": case.label,
            "thumbnail": thumbnail(pre.image, pre.mask)}  # fmt: skip
    cache.put(key, pre.image.astype(cfg.cache_dtype, copy=False), pre.mask, meta)
    return meta


def prepare_case(case: Case, cfg: DataConfig, cache: VolumeCache, digests: dict[str, str | None]) -> CaseResult:
    """Preprocess one case into the cache unless already there; never raises ``DataError``."""
    try:
        key = cache_key(digests["t1"], digests["t2"], cfg)
        meta = cache.meta(key) if cache.contains(key) else _preprocess_into_cache(case, key, cfg, cache)
    except DataError as exc:
        return CaseResult(case, error=exc)
    return CaseResult(case, key=key, facts=meta["facts"], content=meta["content"], thumbnail=meta["thumbnail"])


def _refuse_duplicate(
    case: Case, digests: dict[str, str | None] | dict[str, str], owner: dict[str, str], what: str, code: str
) -> None:
    """Record ``case``'s digests in ``owner``; raise if one already belongs to another subject.

    Args:
        case: the case being prepared.
        digests: its digest per modality (``None``: modality absent).
        owner: digest -> first subject seen with it (updated).
        what: the message, with ``{file}`` for the offending file and ``{first}`` for the first subject.
        code: the failure code counted in the passport.
    """
    for name, digest in digests.items():
        if digest is None:
            continue
        first = owner.setdefault(digest, case.subject_id)
        if first != case.subject_id:
            raise DataError(what.format(file=f"{name.upper()} {getattr(case, name)}", first=first), code)


def prepare_site(
    cases: Sequence[Case],
    cfg: DataConfig,
    cache: VolumeCache,
    on_case: Callable[[CaseResult], None] | None = None,
    sources: SourceIndex | None = None,
    full: bool = True,
) -> list[CaseResult]:
    """Validate and preprocess every case; failures are returned, not raised.

    A file whose bytes equal a file of an earlier case (e.g. the same scan filed under two subjects,
    which would leak between splits) fails as ``duplicate_image``; one whose decoded voxels equal those of an
    earlier case's file (the same scan re-saved with another header) fails as ``duplicate_content``.

    Args:
        cases: the site's cases (``manifest.load_cases``).
        cfg: preprocessing settings.
        cache: where preprocessed cases are stored.
        on_case: called after each case (progress display).
        sources: where source digests are recorded with the files' stat (``None``: hash every file, record
            nothing). Saved before returning.
        full: hash every source file again; otherwise an unchanged file of a cached case is not read.

    Returns:
        One result per case, in input order.
    """
    results = []
    file_owner: dict[str, str] = {}  # file digest -> first subject that used it
    content_owner: dict[str, str] = {}  # decoded-voxel digest -> first subject that used it
    for case in cases:
        try:
            digests = _case_digests(case, cfg, cache, sources, full)
            if digests["t1"] is not None and digests["t1"] == digests["t2"]:
                raise DataError(f"T1 and T2 of subject {case.subject_id!r} are the same image", "duplicate_image")
            same_bytes = "file {file} is identical to a file of subject {first!r}"
            _refuse_duplicate(case, digests, file_owner, same_bytes, "duplicate_image")
            result = prepare_case(case, cfg, cache, digests)
            same_voxels = "file {file} has the same voxels as a file of subject {first!r} (the same scan re-saved?)"
            _refuse_duplicate(case, result.content, content_owner, same_voxels, "duplicate_content")
        except DataError as exc:
            result = CaseResult(case, error=exc)
        results.append(result)
        if on_case is not None:
            on_case(result)
    if sources is not None:
        sources.save()
    return mark_near_duplicates(results, cfg.near_duplicate_correlation)


def mark_near_duplicates(results: list[CaseResult], threshold: float) -> list[CaseResult]:
    """``results`` with a warning on every usable case whose thumbnail matches an earlier usable case's."""
    from endofed.data.similarity import near_duplicate_pairs

    usable = [i for i, r in enumerate(results) if r.ok]
    marked = list(results)
    for a, b, channel, corr in near_duplicate_pairs([results[i].thumbnail for i in usable], threshold):
        first, later = results[usable[a]], results[usable[b]]
        modality = MODALITIES[channel].upper()
        warning = (
            f"{modality} looks like the {modality} of subject {first.case.subject_id!r} (thumbnail correlation "
            f"{corr:.4f} >= data.near_duplicate_correlation {threshold:g}): one scan filed twice?"
        )
        marked[usable[b]] = dataclasses.replace(later, near_duplicate=warning)
    return marked
