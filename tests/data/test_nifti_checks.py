"""The input checks of ``load_volume``: voxel type, declared size against limits and file size, geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from endofed.config import DataConfig
from endofed.data.geometry import make_affine
from endofed.data.nifti import (
    INFLATION_FLOOR_BYTES,
    check_declared_size,
    check_geometry,
    check_voxel_type,
    load_volume,
)
from endofed.errors import DataError
from tests.helpers import write_nifti

AFFINE = make_affine("LAS", (0.6, 0.6, 4.0), (8, 8, 5))
P = Path("/x/img.nii.gz")
CFG = DataConfig(max_voxels=1000, max_inflation=10.0, roi_size=(4, 4, 4))


def _code(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    assert "\n" not in str(info.value)
    return info.value.code


@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "float64", "int32", "uint16"])
def test_real_scalar_types_pass(dtype):
    check_voxel_type(np.dtype(dtype), P)


@pytest.mark.parametrize(
    ("dtype", "words"),
    [
        (np.dtype("complex64"), "complex-valued voxels (complex64)"),
        (np.dtype("complex128"), "complex-valued voxels (complex128)"),
        (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "colour (RGB)"),
        (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")]), "colour (RGB)"),
        (np.dtype([("a", "f4"), ("b", "f4")]), "structured voxels ('a', 'b')"),
        (np.dtype("bool"), "unsupported voxel type bool"),
    ],
)
def test_other_types_are_refused_by_name(dtype, words):
    with pytest.raises(DataError, match=r"\S") as info:
        check_voxel_type(dtype, P)
    assert words in str(info.value) and str(P) in str(info.value) and info.value.code == "bad_dtype"


def test_declared_size_limits_by_hand():
    # 1000 voxels is the limit: 10 x 10 x 10 passes, 1001 does not.
    check_declared_size(1000, 2, 352, 2352, False, CFG, P)
    assert _code(lambda: check_declared_size(1001, 2, 352, 10**6, False, CFG, P)) == "too_large"
    # Uncompressed: 352 + 1000 * 2 = 2352 bytes are needed; one byte less is a truncated file.
    assert _code(lambda: check_declared_size(1000, 2, 352, 2351, False, CFG, P)) == "unreadable"


def test_inflation_bound_applies_above_the_floor_only():
    big = DataConfig(max_voxels=2**40, max_inflation=10.0)
    voxels = INFLATION_FLOOR_BYTES // 2 + 1  # int16: just above the floor
    data_bytes = voxels * 2
    check_declared_size(voxels, 2, 352, data_bytes // 10 + 1, True, big, P)  # 9.99x: fine
    assert _code(lambda: check_declared_size(voxels, 2, 352, data_bytes // 10 - 1, True, big, P)) == "too_large"
    # Below the floor any ratio passes (a small constant volume compresses 1000-fold).
    check_declared_size(1000, 2, 352, 3, True, big, P)


@pytest.mark.parametrize(
    ("spacing", "fov", "ok"),
    [
        ((0.5, 0.5, 4.0), (200.0, 200.0, 80.0), True),
        ((0.05, 20.0, 1.0), (1.0, 2000.0, 50.0), True),  # the bounds themselves
        ((0.0005, 0.0005, 0.004), (0.2, 0.2, 0.08), False),  # written in metres
        ((1e20, 1.0, 1.0), (1e22, 100.0, 100.0), False),
        ((0.5, 0.5, 25.0), (200.0, 200.0, 500.0), False),
        ((0.5, 0.5, 4.0), (200.0, 200.0, 0.5), False),  # FOV too small
    ],
)
def test_geometry_ranges(spacing, fov, ok):
    cfg = DataConfig()
    call = lambda: check_geometry(np.array(spacing), np.array(fov), cfg, P)  # noqa: E731
    if ok:
        call()
    else:
        assert _code(call) == "implausible_geometry"


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, path)
    return path


def test_load_refuses_complex_and_rgb_files(tmp_path):
    complex_path = _save(tmp_path / "c.nii.gz", (np.ones((8, 8, 5)) + 1j).astype(np.complex64))
    rgb = np.zeros((8, 8, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 7
    rgb_path = _save(tmp_path / "rgb.nii.gz", rgb)
    assert _code(lambda: load_volume(complex_path)) == "bad_dtype"
    assert _code(lambda: load_volume(rgb_path)) == "bad_dtype"


def test_load_refuses_a_header_larger_than_its_file(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((3000, 3000, 10))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    header.set_sform(AFFINE, code=1)
    path = tmp_path / "short.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * 1000)
    with pytest.raises(DataError, match="declares 180,000,000 bytes of voxels from byte 352, but the file has 1,352"):
        load_volume(path)


def test_load_applies_the_configured_limits(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", np.arange(320).reshape(8, 8, 5) + 1, AFFINE)
    load_volume(path, DataConfig(max_voxels=320, roi_size=(4, 4, 4)))
    with pytest.raises(DataError, match="declares 320 voxels, above data.max_voxels = 319"):
        load_volume(path, DataConfig(max_voxels=319, roi_size=(4, 4, 4)))
    with pytest.raises(DataError, match=r"implausible voxel spacing 0.6 x 0.6 x 4 mm .* \[0.7, 20\]"):
        load_volume(path, DataConfig(spacing_range_mm=(0.7, 20.0)))


def test_roi_larger_than_the_voxel_limit_is_a_config_error():
    with pytest.raises(ValueError, match=r"data.roi_size \(100000, 100000, 10000\) needs 200,000,000,000,000"):
        DataConfig(roi_size=(100000, 100000, 10000))
    DataConfig(roi_size=(8, 8, 8), max_voxels=1024)  # 2 x 512: exactly the limit
    with pytest.raises(ValueError, match="above data.max_voxels"):
        DataConfig(roi_size=(8, 8, 9), max_voxels=1024)
