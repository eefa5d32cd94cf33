from __future__ import annotations

import json
from pathlib import Path

import pytest

from endofed.config import DataConfig, load_site_config
from endofed.data.check import check_site
from endofed.data.manifest import Case
from endofed.data.passport import build_passport
from endofed.data.site import CaseResult
from endofed.errors import DataError


def _facts(orientation: str, spacing: list[float], shape: list[int], p99: float) -> dict:
    fov = [s * n for s, n in zip(spacing, shape, strict=True)]
    return {
        "orientation": orientation,
        "spacing_mm": spacing,
        "shape": shape,
        "fov_mm": fov,
        "dtype": "int16",
        "intensity_percentiles": [0.0, 100.0, p99],
    }


def _ok(subject: str, label: int | None, t2_orientation: str, overlap: float, with_t1: bool = True) -> CaseResult:
    facts = {"t2": _facts(t2_orientation, [0.5, 0.5, 3.6], [400, 400, 20], 900.0), "overlap_fraction": overlap}
    if with_t1:
        facts["t1"] = _facts("RAS", [1.6, 1.6, 3.6], [160, 140, 30], 1200.0)
    return CaseResult(Case(subject, Path("/secret") / subject, Path("/x"), label), key="k", facts=facts)


def _failed(subject: str, code: str) -> CaseResult:
    return CaseResult(Case(subject, None, Path("/x"), 1), error=DataError(f"bad {subject}", code))


def test_passport_numbers_by_hand():
    results = [
        _ok("a", 1, "LAS", 0.9),
        _ok("b", 0, "PSR", 0.5),
        _ok("c", 0, "LAS", 1.0),
        _ok("d", None, "LAS", 0.7, with_t1=False),
        _failed("e", "missing_file"),
        _failed("f", "duplicate_image"),
        _failed("g", "missing_file"),
    ]
    passport = build_passport("h1", results, DataConfig())
    assert passport["cases"] == {
        "total": 7, "usable": 4, "failed": 3, "labelled": 3, "unlabelled": 1,
        "positive": 1, "negative": 2, "positive_fraction": round(1 / 3, 4),
    }  # fmt: skip
    t2, t1 = passport["modalities"]["t2"], passport["modalities"]["t1"]
    assert t2["present"] == 4 and t2["missing"] == 0 and t1["present"] == 3 and t1["missing"] == 1
    assert t2["orientations"] == {"LAS": 3, "PSR": 1}
    assert t2["spacing_mm"]["min"] == [0.5, 0.5, 3.6]
    assert t1["fov_mm"]["max"] == [256.0, 224.0, 108.0]
    assert t1["intensity_percentiles_median"] == {"p1": 0.0, "p50": 100.0, "p99": 1200.0}
    assert passport["t1_t2_overlap"] == {"min": 0.5, "median": 0.9}  # case d has no T1: not counted
    assert passport["failures"] == {"duplicate_image": 1, "missing_file": 2}
    assert passport["duplicates"] == 1
    assert passport["ready"] is False
    assert build_passport("h1", results, DataConfig(), allow_failures=True)["ready"] is True
    assert build_passport("h1", results[:4], DataConfig())["ready"] is True
    assert build_passport("h1", results[4:], DataConfig(), allow_failures=True)["ready"] is False


def test_passport_has_no_paths_or_subject_ids(example_site):
    site = load_site_config(example_site)
    check = check_site(site, DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 16)))
    text = json.dumps(check.passport)
    assert json.loads(check.passport_path.read_text()) == check.passport
    assert check.passport["cases"]["usable"] == 6 and check.passport["ready"]
    assert "sub-" not in text and "/" not in text.replace("\\/", "")
    assert "nii" not in text


def test_work_dir_inside_data_root_is_refused(example_site):
    example_site.write_text(example_site.read_text().replace("work_dir: work", "work_dir: data/work"))
    site = load_site_config(example_site)
    with pytest.raises(DataError, match="work_dir .* is inside the source data folder .*source data is read-only"):
        check_site(site, DataConfig())
    assert not (site.data_root / "work").exists()


@pytest.mark.parametrize("allow", [False, True])
def test_check_reports_bad_cases_without_raising(example_site, allow):
    site = load_site_config(example_site)
    victim = site.data_root / "sub-002" / "T2.nii.gz"
    victim.unlink()
    check = check_site(site, DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 16)), allow_failures=allow)
    failed = [r for r in check.results if not r.ok]
    assert [r.case.subject_id for r in failed] == ["sub-002"]
    assert f"missing file: {victim}" == str(failed[0].error)
    assert check.passport["failures"] == {"missing_file": 1}
    assert check.passport["ready"] is allow
