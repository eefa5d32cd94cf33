"""The data passport: an aggregate, shareable summary of a site's data (no paths, no subject ids).

It is what a hospital may show the coordinator before joining: how many cases, how many labelled, the
label balance, which modalities are present, the orientation codes, spacing/shape/FOV ranges, intensity
percentiles, duplicates (identical files, files with identical voxels, and usable cases that look like an
earlier one), and how many cases failed for which reason.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

import endofed
from endofed.config import DataConfig
from endofed.data.cache import config_digest
from endofed.data.manifest import MODALITIES
from endofed.data.site import CaseResult

PASSPORT_VERSION = 1


def _range(rows: list[list[float]]) -> dict[str, list[float]]:
    """Per-axis min / median / max of a list of 3-vectors."""
    array = np.asarray(rows, dtype=float)
    return {
        "min": [round(float(v), 3) for v in array.min(axis=0)],
        "median": [round(float(v), 3) for v in np.median(array, axis=0)],
        "max": [round(float(v), 3) for v in array.max(axis=0)],
    }


def modality_summary(facts: list[dict[str, Any]], n_usable: int) -> dict[str, Any]:
    """Aggregate the source facts of one modality over the usable cases that have it."""
    summary: dict[str, Any] = {"present": len(facts), "missing": n_usable - len(facts)}
    if not facts:
        return summary
    summary["orientations"] = dict(sorted(Counter(f["orientation"] for f in facts).items()))
    summary["dtypes"] = dict(sorted(Counter(f["dtype"] for f in facts).items()))
    summary["spacing_mm"] = _range([f["spacing_mm"] for f in facts])
    summary["shape"] = _range([f["shape"] for f in facts])
    summary["fov_mm"] = _range([f["fov_mm"] for f in facts])
    pct = np.median(np.asarray([f["intensity_percentiles"] for f in facts], dtype=float), axis=0)
    summary["intensity_percentiles_median"] = {
        "p1": float(pct[0]),
        "p50": float(pct[1]),
        "p99": float(pct[2]),
    }
    return summary


def build_passport(
    site_id: str, results: Sequence[CaseResult], cfg: DataConfig, allow_failures: bool = False
) -> dict[str, Any]:
    """Summarise prepared cases into the passport dict (JSON-serialisable, aggregate numbers only).

    ``ready`` is true when at least one case is usable and no case failed (or failures are allowed, in
    which case failed cases are simply left out of training).
    """
    usable = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    labels = [r.case.label for r in usable]
    positives, negatives = labels.count(1), labels.count(0)
    labelled = positives + negatives
    overlaps = [r.facts["overlap_fraction"] for r in usable if "t1" in r.facts and "t2" in r.facts]
    return {
        "passport_version": PASSPORT_VERSION,
        "endofed_version": endofed.__version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "site_id": site_id,
        "preprocessing_digest": config_digest(cfg),
        "cases": {
            "total": len(results),
            "usable": len(usable),
            "failed": len(failed),
            "labelled": labelled,
            "unlabelled": len(usable) - labelled,
            "positive": positives,
            "negative": negatives,
            "positive_fraction": round(positives / labelled, 4) if labelled else None,
        },
        "modalities": {
            name: modality_summary([r.facts[name] for r in usable if name in r.facts], len(usable))
            for name in MODALITIES
        },
        "t1_t2_overlap": (
            {"min": round(min(overlaps), 4), "median": round(float(np.median(overlaps)), 4)} if overlaps else None
        ),
        "duplicates": sum(1 for r in failed if r.error is not None and r.error.code == "duplicate_image"),
        "near_duplicates": sum(1 for r in usable if r.near_duplicate is not None),
        "content_duplicates": sum(1 for r in failed if r.error is not None and r.error.code == "duplicate_content"),
        "failures": dict(sorted(Counter(r.error.code for r in failed if r.error is not None).items())),
        "ready": bool(usable) and (not failed or allow_failures),
    }
