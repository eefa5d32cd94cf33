"""Every rendered sign and mimic has its intended contrast in both modalities (voxel statistics)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from endofed.synth.anatomy import F
from endofed.synth.cohort import SubjectSpec, build_scene, render_subject
from endofed.synth.profile import SiteProfile, load_preset
from endofed.synth.qc import contrast_table

SITES = {site.name: site for site in load_preset("demo3")}
FAT_SAT = SITES["hospital_a"]  # fat-saturated 3D GRE T1
NO_FAT_SAT = SITES["hospital_b"]  # 3 T, GRE T1 without fat saturation
TSE = SITES["hospital_c"]  # T1 TSE


@functools.cache
def _ratios(site_name: str, finding: F) -> list[dict[str, dict[str, float]]]:
    """Median intensity of the finding relative to reference tissues, per modality, for 3 subjects.

    Subjects whose finding falls outside a field of view are skipped (seeds are tried in order).
    """
    site = SITES[site_name]
    signs = dataclasses.replace(site.cohort.signs, t2_shading=1.0)
    site = dataclasses.replace(site, cohort=dataclasses.replace(site.cohort, signs=signs))
    found = []
    for seed in range(1, 20):
        spec = SubjectSpec("s", 1, 1, (finding,))
        acquisitions, _ = render_subject(spec, site, "tiny", np.random.default_rng(seed))
        tables = {name: contrast_table(acq) for name, acq in acquisitions.items()}
        if all(finding.name.lower() in table for table in tables.values()):
            found.append(
                {
                    name: {ref: table[finding.name.lower()] / table[ref] for ref in ("muscle", "myometrium", "urine")}
                    for name, table in tables.items()
                }
            )
        if len(found) == 3:
            return found
    raise AssertionError(f"{finding.name} was outside the field of view in too many subjects at {site_name}")


def _median_ratio(site: SiteProfile, finding: F, modality: str, reference: str) -> float:
    return float(np.median([ratios[modality][reference] for ratios in _ratios(site.name, finding)]))


@pytest.mark.parametrize("site", [FAT_SAT, NO_FAT_SAT, TSE], ids=lambda s: s.name)
def test_endometrioma_is_t1_bright_and_t2_dark(site):
    assert _median_ratio(site, F.ENDOMETRIOMA, "T1", "muscle") > 1.4
    assert _median_ratio(site, F.ENDOMETRIOMA, "T2", "urine") < 0.4
    assert _median_ratio(site, F.ENDOMETRIOMA, "T2", "myometrium") < 0.8


@pytest.mark.parametrize("site", [FAT_SAT, NO_FAT_SAT, TSE], ids=lambda s: s.name)
def test_mimics_differ_from_endometrioma_in_one_modality_only(site):
    # Haemorrhagic cyst: T1 bright like an endometrioma, but T2 bright (no shading).
    assert _median_ratio(site, F.HAEMORRHAGIC_CYST, "T1", "muscle") > 1.4
    assert _median_ratio(site, F.HAEMORRHAGIC_CYST, "T2", "myometrium") > 1.2
    # Simple cyst: T1 dark, T2 very bright.
    assert _median_ratio(site, F.SIMPLE_CYST, "T1", "muscle") < 1.0
    assert _median_ratio(site, F.SIMPLE_CYST, "T2", "myometrium") > 1.5
    # Fibroid: T2 dark like the positives, T1 iso to myometrium (not bright).
    assert _median_ratio(site, F.FIBROID, "T2", "myometrium") < 0.7
    assert 0.6 < _median_ratio(site, F.FIBROID, "T1", "myometrium") < 1.4


@pytest.mark.parametrize("site", [FAT_SAT, NO_FAT_SAT, TSE], ids=lambda s: s.name)
def test_deep_nodule_is_t2_dark_and_t1_iso(site):
    assert _median_ratio(site, F.DEEP_NODULE, "T2", "myometrium") < 0.8
    assert 0.5 < _median_ratio(site, F.DEEP_NODULE, "T1", "muscle") < 1.6


def test_dermoid_fat_is_suppressed_only_with_fat_saturation():
    assert _median_ratio(NO_FAT_SAT, F.DERMOID, "T1", "muscle") > 1.4
    assert _median_ratio(FAT_SAT, F.DERMOID, "T1", "muscle") < 1.0


def _pod_gap(obliterated: bool, seed: int) -> float:
    """Distance between the posterior cervix and the anterior rectal wall (mm) in a built scene."""
    findings = (F.POD_OBLITERATION,) if obliterated else ()
    scene, _ = build_scene(
        SubjectSpec("s", int(obliterated), None, findings), FAT_SAT.cohort, np.random.default_rng(seed)
    )
    assert scene.cervix is not None and scene.rectum_points is not None
    posterior_cervix = float(scene.cervix.bbox()[0][1])
    rectum_y = float(np.interp(-12.0, scene.rectum_points[:, 2], scene.rectum_points[:, 1]))
    return posterior_cervix - (rectum_y + scene.rectum_radius)


@pytest.mark.parametrize("seed", range(4))
def test_pouch_of_douglas_fat_plane_is_lost_only_when_obliterated(seed):
    assert _pod_gap(False, seed) >= 4.0  # normal: a fat plane of 5-15 mm
    assert _pod_gap(True, seed) <= 2.0  # obliterated: rectum against the cervix
