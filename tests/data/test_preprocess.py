from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from endofed.config import DataConfig
from endofed.data.geometry import make_affine
from endofed.data.nifti import Volume, load_volume
from endofed.data.preprocess import preprocess_case, robust_normalise
from endofed.errors import DataError
from tests.helpers import NIBABEL_DATA, sphere_volume, write_nifti

CENTRE = (12.0, -8.0, 20.0)  # world mm of the object's centre, away from every grid centre


def test_robust_normalise_by_hand():
    values = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 1000.0, 0.0])
    valid = np.array([True, True, True, True, True, False, True])
    # Valid non-zero values 10..50 (the exact zero is background, left out); percentiles (0, 100) -> 10 and 50:
    # (x - 10) / 40; the invalid voxel becomes 0, the zero maps below 0 and is clipped there.
    out = robust_normalise(values, valid, (0.0, 100.0), clip=True)
    np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 0.75, 1.0, 0.0, 0.0])
    # Percentiles (25, 75) of 10..50 are 20 and 40: (x - 20) / 20; clipped to [0, 1], or only below 0.
    np.testing.assert_allclose(robust_normalise(values, valid, (25.0, 75.0), clip=False)[:5], [0, 0, 0.5, 1, 1.5])
    np.testing.assert_allclose(robust_normalise(values, valid, (25.0, 75.0), clip=True)[:5], [0, 0, 0.5, 1, 1])


def test_robust_normalise_small_object_on_a_constant_background():
    # 2 bright voxels in 100: the 1st and 95th percentiles are both the background, so the maximum is used.
    values = np.full(100, 100.0)
    values[:2] = 1000.0
    out = robust_normalise(values, np.ones(100, bool), (1.0, 95.0), clip=False)
    np.testing.assert_allclose(out[:3], [1.0, 1.0, 0.0])


def test_robust_normalise_constant_and_empty():
    values = np.full(4, 7.0)
    assert not robust_normalise(values, np.ones(4, bool), (1, 99), True).any()
    assert not robust_normalise(values, np.zeros(4, bool), (1, 99), True).any()


def _object_centroid(channel: np.ndarray) -> np.ndarray:
    """Centroid of the voxels above half the channel's maximum (the bright sphere, whatever the scaling)."""
    return np.array(ndimage.center_of_mass(channel > 0.5 * channel.max()))


@pytest.mark.parametrize("t2_code", ["LAS", "PSR", "LSP", "RAS"])
def test_t1_and_t2_of_one_object_land_on_the_same_voxel(tmp_path, t2_code):
    """T2 at 0.5 x 0.5 x 3.6 mm (various orientations), T1 RAS at 1.6 x 1.6 x 3.6 mm, other FOV."""
    t2_shape, t1_shape = (240, 240, 18), (100, 90, 20)
    t2_affine = make_affine(t2_code, (0.5, 0.5, 3.6), t2_shape, (0.0, 0.0, 10.0))
    t1_affine = make_affine("RAS", (1.6, 1.6, 3.6), t1_shape, (-9.0, 6.0, 4.0))
    t2 = write_nifti(tmp_path / "t2.nii.gz", sphere_volume(t2_affine, t2_shape, CENTRE, 14.0), t2_affine)
    t1 = write_nifti(tmp_path / "t1.nii", sphere_volume(t1_affine, t1_shape, CENTRE, 14.0), t1_affine)
    cfg = DataConfig(target_spacing=(1.0, 1.0, 3.0), roi_size=(96, 96, 32))
    pre = preprocess_case(load_volume(t1), load_volume(t2), cfg)
    assert pre.image.shape == (2, 96, 96, 32) and pre.image.dtype == np.float32
    c1, c2 = _object_centroid(pre.image[0]), _object_centroid(pre.image[1])
    assert np.all(np.abs(c1 - c2) <= 1.0), (c1, c2)
    # And both sit where the world centre maps in the output grid.
    expected = (np.linalg.inv(pre.affine) @ np.array([*CENTRE, 1.0]))[:3]
    assert np.all(np.abs(c2 - expected) <= 1.0), (c2, expected)


def test_oblique_t2_and_t1_of_one_object_land_on_the_same_voxel(tmp_path):
    """T2 tilted 25 degrees about S and 10 about R (oblique axial); T1 axis-aligned LPS on another grid."""
    tilt_s, tilt_r = np.deg2rad(25.0), np.deg2rad(10.0)
    about_s = np.array([[np.cos(tilt_s), -np.sin(tilt_s), 0], [np.sin(tilt_s), np.cos(tilt_s), 0], [0, 0, 1]])
    about_r = np.array([[1, 0, 0], [0, np.cos(tilt_r), -np.sin(tilt_r)], [0, np.sin(tilt_r), np.cos(tilt_r)]])
    t2_shape = (200, 200, 20)
    t2_affine = np.eye(4)
    t2_affine[:3, :3] = about_r @ about_s @ np.diag([0.6, 0.6, 3.6])
    t2_affine[:3, 3] = np.array([0.0, 0.0, 5.0]) - t2_affine[:3, :3] @ ((np.array(t2_shape) - 1) / 2)
    t1_shape = (120, 100, 24)
    t1_affine = make_affine("LPS", (1.6, 1.6, 3.6), t1_shape, (4.0, -3.0, 12.0))
    t2 = write_nifti(tmp_path / "t2.nii.gz", sphere_volume(t2_affine, t2_shape, CENTRE, 15.0), t2_affine)
    t1 = write_nifti(tmp_path / "t1.nii.gz", sphere_volume(t1_affine, t1_shape, CENTRE, 15.0), t1_affine)
    pre = preprocess_case(load_volume(t1), load_volume(t2), DataConfig(roi_size=(96, 96, 32)))
    c1, c2 = _object_centroid(pre.image[0]), _object_centroid(pre.image[1])
    assert np.all(np.abs(c1 - c2) <= 1.0), (c1, c2)
    expected = (np.linalg.inv(pre.affine) @ np.array([*CENTRE, 1.0]))[:3]
    assert np.all(np.abs(c1 - expected) <= 1.0), (c1, expected)


def test_validity_mask_follows_each_field_of_view(tmp_path):
    # T1 covers only the superior half of the T2 region (along S).
    t2_affine = make_affine("RAS", (1.0, 1.0, 3.0), (64, 64, 20), (0.0, 0.0, 0.0))
    t1_affine = make_affine("RAS", (1.0, 1.0, 3.0), (64, 64, 10), (0.0, 0.0, 15.0))
    t2 = Volume(np.ones((64, 64, 20), np.float32), t2_affine, "float32")
    t1 = Volume(np.ones((64, 64, 10), np.float32), t1_affine, "float32")
    pre = preprocess_case(t1, t2, DataConfig(target_spacing=(1.0, 1.0, 3.0), roi_size=(64, 64, 20)))
    assert pre.mask[1].all()
    assert pre.mask[0][:, :, 10:].all() and not pre.mask[0][:, :, :10].any()
    assert not pre.image[0][:, :, :10].any()  # zero outside its mask


def test_no_overlap_is_refused(tmp_path):
    t2 = Volume(np.ones((32, 32, 10), np.float32), make_affine("RAS", (1, 1, 3), (32, 32, 10)), "float32")
    far = make_affine("RAS", (1, 1, 3), (32, 32, 10), (500.0, 0.0, 0.0))
    t1 = Volume(np.ones((32, 32, 10), np.float32), far, "float32")
    with pytest.raises(DataError, match="T1 and T2 do not overlap in world coordinates") as info:
        preprocess_case(t1, t2, DataConfig(roi_size=(32, 32, 8)))
    assert info.value.code == "no_overlap"


def test_missing_modality_needs_permission():
    t2 = Volume(
        np.random.default_rng(0).random((32, 32, 10), np.float32) + 0.1,
        make_affine("LAS", (1, 1, 3), (32, 32, 10)),
        "float32",
    )
    with pytest.raises(DataError, match="T1 is missing"):
        preprocess_case(None, t2, DataConfig(roi_size=(32, 32, 8)))
    pre = preprocess_case(None, t2, DataConfig(roi_size=(32, 32, 8), allow_missing_modality=True))
    assert not pre.mask[0].any() and not pre.image[0].any()
    assert pre.mask[1].any() and pre.image[1].max() > 0


def test_real_mri_from_nibabel_is_ingested():
    """nibabel's bundled anatomical.nii: a real (big-endian int16, LAS) MR volume."""
    volume = load_volume(NIBABEL_DATA / "anatomical.nii")
    assert volume.orientation == "LAS" and volume.source_dtype.endswith("i2")
    pre = preprocess_case(volume, volume, DataConfig(target_spacing=(2.0, 2.0, 2.0), roi_size=(32, 32, 16)))
    np.testing.assert_allclose(pre.image[0], pre.image[1])
    # The default range (1st to 95th percentile of the non-zero voxels, clipped below only): 0 at the bottom,
    # a twentieth of the voxels above 1, none far above it on a real brain.
    valid = pre.image[1][pre.mask[1] > 0]
    assert valid.min() == 0.0 and 1.0 < valid.max() < 3.0
    assert 0.02 < float(np.mean(valid > 1.0)) < 0.1
