from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from endofed.data.geometry import make_affine
from endofed.data.nifti import load_volume
from endofed.errors import DataError
from tests.helpers import NIBABEL_DATA, write_nifti

AFFINE = make_affine("PSR", (0.6, 0.6, 4.0), (8, 8, 5))


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_loads_common_dtypes_and_suffixes(tmp_path, dtype, suffix):
    data = np.arange(8 * 8 * 5).reshape(8, 8, 5) % 200
    path = write_nifti(tmp_path / f"img{suffix}", data, AFFINE, dtype)
    volume = load_volume(path)
    assert volume.array.dtype == np.float32 and volume.shape == (8, 8, 5)
    np.testing.assert_allclose(volume.array, data)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-5)
    assert volume.orientation == "PSR"
    assert volume.source_dtype == np.dtype(dtype).name


def test_scl_slope_is_applied(tmp_path):
    image = nib.Nifti1Image(np.full((4, 4, 4), 10, np.int16), AFFINE)
    image.header.set_slope_inter(2.0, 5.0)
    nib.save(image, tmp_path / "s.nii.gz")
    assert load_volume(tmp_path / "s.nii.gz").array[0, 0, 0] == pytest.approx(25.0)


def test_singleton_fourth_dimension_is_accepted(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", np.ones((4, 5, 6, 1)), AFFINE)
    assert load_volume(path).shape == (4, 5, 6)


def _expect(path, code: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        load_volume(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text
    assert info.value.code == code


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.nii.gz", "missing_file", "missing file")


def test_truncated_gzip(tmp_path):
    path = write_nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).integers(1, 999, (40, 40, 20)), AFFINE)
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    _expect(path, "unreadable", "corrupt or truncated")


def test_corrupt_gzip_header(tmp_path):
    path = tmp_path / "c.nii.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    _expect(path, "unreadable", "corrupt or truncated gzip")


def test_text_file_is_not_nifti(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is a radiology report, not an image\n" * 20)
    _expect(path, "unreadable", "not a NIfTI file")


def test_gzipped_text_is_not_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"not an image at all" * 40))
    _expect(path, "unreadable", "")


def test_wrong_extension(tmp_path):
    path = tmp_path / "scan.mgz"
    path.write_bytes(b"x")
    _expect(path, "not_nifti", "not a NIfTI file (expected .nii or .nii.gz)")


def test_4d_series_is_refused(tmp_path):
    path = write_nifti(tmp_path / "dwi.nii.gz", np.ones((8, 8, 5, 6)), AFFINE)
    _expect(path, "not_3d", "expected a 3D volume, got a 4D series of shape (8, 8, 5, 6)")


@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz"])
def test_real_4d_files_from_nibabel_are_refused(name):
    _expect(NIBABEL_DATA / name, "not_3d", "expected a 3D volume")


def test_all_zero_volume(tmp_path):
    _expect(write_nifti(tmp_path / "z.nii.gz", np.zeros((4, 4, 4)), AFFINE), "all_zero", "volume is all zero")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_volume(tmp_path, bad):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = bad
    path = write_nifti(tmp_path / "n.nii.gz", data, AFFINE, np.float32)
    _expect(path, "non_finite", "NaN or Inf")


def test_singular_affine(tmp_path):
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), None)
    image.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    path = tmp_path / "s.nii.gz"
    nib.save(image, path)
    _expect(path, "bad_affine", "invalid (singular or non-finite) affine")


def test_header_without_world_coordinates(tmp_path):
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), AFFINE)
    image.set_sform(None, code=0)
    image.set_qform(None, code=0)
    path = tmp_path / "analyze_like.nii.gz"
    nib.save(image, path)
    _expect(path, "bad_affine", "no world coordinates in")


def test_loading_does_not_modify_the_file(tmp_path):
    path = write_nifti(tmp_path / "r.nii.gz", np.ones((4, 4, 4)), AFFINE)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    load_volume(path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
