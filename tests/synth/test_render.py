"""Per-subject acquisition variation: oblique grids (affine, window, world geometry) and ghosting rates."""

from __future__ import annotations

import csv
import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from endofed.config import load_config
from endofed.data.geometry import grid_centre_mm, orientation_code, ras_direction, voxel_to_voxel
from endofed.data.nifti import load_volume
from endofed.data.preprocess import overlap_fraction, preprocess_case
from endofed.synth.anatomy import F
from endofed.synth.cohort import SubjectSpec, build_scene, draw_subject, render_subject, write_site
from endofed.synth.profile import SequenceProfile, SiteProfile, at_scale, load_preset
from endofed.synth.render import (
    AcquisitionDraws,
    _integrate_and_sample,
    _sample,
    acquire,
    acquisition_grid,
    fine_grid_for,
    is_axis_aligned,
)
from endofed.synth.tissues import T, sample_tissues
from tests.helpers import TINY, world_grid

ALPHA = load_preset("tiny")[0]  # sagittal PSR T2, axial LAS 3D GRE T1
COARSE = {"in_plane_mm": 3.0, "slice_mm": 4.0, "gap_mm": 0.0, "fov_mm": (240.0, 240.0), "slices": 8}


def _with_t2(site: SiteProfile, **changes: object) -> SiteProfile:
    return dataclasses.replace(site, t2=dataclasses.replace(site.t2, **changes))


def _slice_tilt_deg(affine: np.ndarray) -> float:
    """Angle between the slice direction (array axis 2) and the nearest world axis."""
    unit = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    return float(np.degrees(np.arccos(np.abs(unit).max())))


def _resampled_correlation(src: np.ndarray, src_affine: np.ndarray, dst: np.ndarray, dst_affine: np.ndarray) -> float:
    """Correlation of ``dst`` with ``src`` resampled onto its grid by world coordinates (inside both FOVs)."""
    xform = voxel_to_voxel(dst_affine, src_affine)
    coords = xform[:3, :3] @ np.indices(dst.shape).reshape(3, -1) + xform[:3, 3:4]
    inside = np.all((coords >= 0) & (coords <= np.array(src.shape)[:, None] - 1), axis=0)
    values = ndimage.map_coordinates(src.astype(float), coords[:, inside], order=1)
    return float(np.corrcoef(values, dst.ravel()[inside].astype(float))[0, 1])


def test_tilted_grid_by_hand():
    sequence = SequenceProfile(
        plane="axial", orientation="LAS", in_plane_mm=1.5, slice_mm=4.0, gap_mm=0.4, fov_mm=(30.0, 27.0), slices=6
    )
    centre = np.array([5.0, -3.0, 2.0])
    aligned, shape = acquisition_grid(sequence, centre)
    tilted, same_shape = acquisition_grid(sequence, centre, AcquisitionDraws(tilt_deg=30.0, tilt_azimuth_deg=0.0))
    assert same_shape == shape == (20, 18, 6) and is_axis_aligned(aligned) and not is_axis_aligned(tilted)
    # 30 degrees about array axis 0 (L = -x): A turns towards I, S towards A; the L column does not move.
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    np.testing.assert_allclose(tilted[:3, 0], [-1.5, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(tilted[:3, 1], [0.0, 1.5 * c, -1.5 * s], atol=1e-12)
    np.testing.assert_allclose(tilted[:3, 2], [0.0, 4.4 * s, 4.4 * c], atol=1e-12)
    np.testing.assert_allclose(grid_centre_mm(tilted, shape), centre, atol=1e-9)
    assert _slice_tilt_deg(tilted) == pytest.approx(30.0) and orientation_code(tilted) == "LAS"
    # Any azimuth: the slice direction leaves S by exactly the tilt; zero tilt is the aligned affine itself.
    for azimuth in (0.0, 37.0, 90.0, 151.0):
        other, _ = acquisition_grid(sequence, centre, AcquisitionDraws(tilt_deg=-12.5, tilt_azimuth_deg=azimuth))
        assert _slice_tilt_deg(other) == pytest.approx(12.5)
    np.testing.assert_array_equal(acquisition_grid(sequence, centre, AcquisitionDraws(0.0, 40.0))[0], aligned)


def test_oblique_box_window_lies_along_the_tilted_slices():
    # f = x * y is exact under linear interpolation, and its mean over the samples at k * s * n (k = -1, 0, 1)
    # along a unit direction n is x * y + (2/3) s^2 n_x n_y: the window's direction shows in the second term.
    sequence = SequenceProfile(
        plane="axial", orientation="LAS", in_plane_mm=1.5, slice_mm=4.0, gap_mm=0.4, fov_mm=(30.0, 30.0), slices=6
    )
    affine, shape = acquisition_grid(sequence, np.zeros(3), AcquisitionDraws(tilt_deg=30.0, tilt_azimuth_deg=45.0))
    grid = fine_grid_for(affine, shape, 1.5, margin_mm=2.0)
    x, y, _ = world_grid(grid.affine(), grid.shape)
    fine = (x * y).astype(np.float32)
    ax, ay, _ = world_grid(affine, shape)
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    assert abs(normal[0] * normal[1]) > 0.05  # tilted towards both R and A, so the term is visible
    window = (2.0 / 3.0) * 1.5**2 * normal[0] * normal[1]
    np.testing.assert_allclose(_integrate_and_sample(fine, grid, sequence, affine, shape), ax * ay + window, atol=2e-3)
    np.testing.assert_allclose(_sample(fine, grid, affine, shape, order=1), ax * ay, atol=2e-3)


@pytest.mark.parametrize("seed", range(3))
def test_oblique_render_keeps_the_world_geometry(seed):
    spec = SubjectSpec("s", 1, 1, (F.ENDOMETRIOMA, F.FIBROID))
    aligned, _ = render_subject(spec, ALPHA, "tiny", np.random.default_rng(seed))
    oblique, _ = render_subject(spec, _with_t2(ALPHA, oblique_deg=30.0), "tiny", np.random.default_rng(seed))
    straight, tilted = aligned["T2"], oblique["T2"]
    assert straight.tilt_deg == 0.0 and 0 < abs(tilted.tilt_deg) <= 30.0
    assert is_axis_aligned(straight.affine) and not is_axis_aligned(tilted.affine)
    assert _slice_tilt_deg(tilted.affine) == pytest.approx(abs(tilted.tilt_deg))
    shape = straight.image.shape
    assert tilted.image.shape == shape
    np.testing.assert_allclose(grid_centre_mm(tilted.affine, shape), grid_centre_mm(straight.affine, shape))
    # Each finding's centroid (ground-truth map) sits at the same world position, within a voxel.
    compared = 0
    for finding in (F.ENDOMETRIOMA, F.FIBROID):
        centroids = []
        for acq in (straight, tilted):
            ijk = np.argwhere(acq.findings == finding)
            centroids.append(acq.affine[:3, :3] @ ijk.mean(axis=0) + acq.affine[:3, 3] if len(ijk) else None)
        if centroids[0] is not None and centroids[1] is not None:
            assert np.linalg.norm(centroids[0] - centroids[1]) < 4.4  # the slice spacing
            compared += 1
    assert compared >= 1
    # The image is the same phantom sampled on the tilted grid: resampled by world coordinates, it matches.
    assert _resampled_correlation(tilted.image, tilted.affine, straight.image, straight.affine) > 0.95
    # Only the T2 was tilted: the T1 is bit-identical (the tilt comes from a stream of its own).
    for name in ("image", "findings", "tissues", "affine"):
        np.testing.assert_array_equal(getattr(oblique["T1"], name), getattr(aligned["T1"], name))


def test_oblique_site_files_record_the_tilt_and_preprocess(tmp_path):
    site = dataclasses.replace(_with_t2(ALPHA, oblique_deg=25.0), cohort=dataclasses.replace(ALPHA.cohort, subjects=2))
    write_site(site, 0, tmp_path, "tiny", seed=3)
    with (tmp_path / site.name / "truth" / "subjects.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    cfg = load_config(TINY).data
    for row in rows:
        record = json.loads(row["acquisition"])
        assert record["T1"]["tilt_deg"] == 0.0 and 0 < abs(record["T2"]["tilt_deg"]) <= 25.0
        folder = tmp_path / site.name / "data" / row["subject_id"]
        t2_file = nib.load(folder / "T2.nii.gz")
        assert _slice_tilt_deg(t2_file.affine) == pytest.approx(abs(record["T2"]["tilt_deg"]), abs=1e-3)
        np.testing.assert_allclose(t2_file.get_sform(), t2_file.get_qform(), atol=1e-4)  # a real oblique qform
        t1, t2 = load_volume(folder / "T1.nii.gz"), load_volume(folder / "T2.nii.gz")
        pre = preprocess_case(t1, t2, cfg)
        # The output grid keeps the T2's obliquity; the axis-aligned T1 covers most of it.
        np.testing.assert_allclose(pre.affine[:3, :3] / np.asarray(cfg.target_spacing), ras_direction(t2.affine))
        assert overlap_fraction(pre) > 0.9 and pre.mask[1].mean() > 0.5
        assert np.ptp(pre.image[0][pre.mask[0] > 0]) > 0.5 and np.ptp(pre.image[1][pre.mask[1] > 0]) > 0.5


def _old_style_render(spec: SubjectSpec, site: SiteProfile, rng: np.random.Generator) -> dict[str, object]:
    """render_subject as it was before the variation knobs: ``acquire`` without draws."""
    scene, _ = build_scene(spec, site.cohort, rng)
    tissues = sample_tissues(rng, site.field_strength)
    centre = rng.normal(0.0, site.position_jitter_mm / 2.0, 3)
    return {
        name: acquire(scene, at_scale(sequence, "tiny"), tissues, centre, rng)
        for name, sequence in (("T2", site.t2), ("T1", site.t1))
    }


def test_knobs_at_their_defaults_render_as_before():
    site = {s.name: s for s in load_preset("demo3")}["hospital_b"]  # T2 with a ghost on every subject
    explicit = _with_t2(site, oblique_deg=0.0, ghosting_rate=1.0)
    assert explicit == site  # omitted = the defaults
    for seed in range(2):
        old_rng, new_rng = np.random.default_rng([seed, 1, 0]), np.random.default_rng([seed, 1, 0])
        before = _old_style_render(draw_subject(old_rng, site.cohort, "s"), site, old_rng)
        now, _ = render_subject(draw_subject(new_rng, site.cohort, "s"), site, "tiny", new_rng)
        for name in ("T2", "T1"):
            for field in ("image", "findings", "tissues", "affine"):
                np.testing.assert_array_equal(getattr(now[name], field), getattr(before[name], field))
        assert now["T2"].ghosting == 0.04 and now["T2"].tilt_deg == 0.0


def _ghost_site(rate: float) -> SiteProfile:
    """Coarse axial T2 with a strong ghost (visible outside the body), shown on ``rate`` of the subjects."""
    t2 = SequenceProfile(plane="axial", orientation="LAS", ghosting=0.3, ghosting_rate=rate, **COARSE)
    t1 = SequenceProfile(kind="t1_gre", plane="axial", orientation="LAS", tr_ms=4.5, te_ms=2.0, flip_deg=12, **COARSE)
    return SiteProfile(t2=t2, t1=t1)


def test_ghosting_rate_is_drawn_per_subject_from_its_own_stream():
    renders = {}
    for rate in (0.0, 0.5, 1.0):
        site, renders[rate] = _ghost_site(rate), []
        for index in range(40):
            rng = np.random.default_rng([1, 0, index])
            spec = draw_subject(rng, site.cohort, "s")
            renders[rate].append(render_subject(spec, site, "full", rng)[0])
    flagged = np.array([acq["T2"].ghosting > 0 for acq in renders[0.5]])
    assert 0.3 <= flagged.mean() <= 0.7
    assert not any(acq["T2"].ghosting for acq in renders[0.0]) and all(acq["T2"].ghosting for acq in renders[1.0])
    for index, ghosted in enumerate(flagged):
        t2 = renders[0.5][index]["T2"]
        # Energy outside the body: the ghost replica lands in the air.
        air = t2.tissues == T.AIR
        air_ratio = t2.image[air].mean() / np.median(t2.image[~air])
        assert (air_ratio > 0.08) == ghosted
        # Nothing else changes: the scan equals the all-ghosted or the ghost-free render of the same subject.
        np.testing.assert_array_equal(t2.image, renders[1.0 if ghosted else 0.0][index]["T2"].image)
        np.testing.assert_array_equal(renders[0.5][index]["T1"].image, renders[0.0][index]["T1"].image)
