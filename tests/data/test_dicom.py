from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from endofed.data.dicom import ConversionReport, SeriesResult, convert_directory, safe_name
from endofed.data.nifti import load_volume
from endofed.errors import DataError
from tests.data.test_dicom_builders import (
    COL_DIR,
    MARKER,
    ORIGIN,
    PIXEL_SPACING,
    ROW_DIR,
    SLICE_STEP,
    folder_digest,
    write_series,
)

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
ECHOES = ({"EchoNumbers": 1, "EchoTime": 20.0}, {"EchoNumbers": 2, "EchoTime": 90.0})


def _marker_world_ras() -> np.ndarray:
    row, col, k = MARKER
    lps = ORIGIN + col * PIXEL_SPACING[1] * ROW_DIR + row * PIXEL_SPACING[0] * COL_DIR + k * SLICE_STEP
    return lps * np.array([-1.0, -1.0, 1.0])


def test_safe_name():
    assert safe_name(" T2 TSE sag / 3mm ") == "T2_TSE_sag_3mm"
    assert safe_name("***") == "series"


def test_converts_each_series_with_the_right_geometry(tmp_path):
    write_series(tmp_path / "dicom" / "a", "T2 TSE SAG", 3)
    write_series(tmp_path / "dicom" / "b", "T1 VIBE", 5, n_slices=6)
    results = convert_directory(tmp_path / "dicom", tmp_path / "out").results
    assert sorted(r.output.name for r in results if r.output) == ["T1_VIBE.nii.gz", "T2_TSE_SAG.nii.gz"]
    image = nib.load(tmp_path / "out" / "T2_TSE_SAG.nii.gz")
    data = np.asarray(image.dataobj)
    assert data.shape == (10, 12, 8) and data.dtype == np.int16
    voxel = np.unravel_index(np.argmax(data), data.shape)
    world = image.affine @ np.array([*voxel, 1.0])
    np.testing.assert_allclose(world[:3], _marker_world_ras(), atol=1e-3)
    volume = load_volume(tmp_path / "out" / "T2_TSE_SAG.nii.gz")  # the converted file passes ingestion checks
    assert volume.orientation == "PIL" and volume.source_dtype == "int16"


def test_missing_slice_is_refused_and_nothing_written(tmp_path):
    write_series(tmp_path / "dicom", "T2 TSE SAG", 3, drop=[4])
    before = folder_digest(tmp_path / "dicom")
    results = convert_directory(tmp_path / "dicom", tmp_path / "out").results
    assert len(results) == 1 and results[0].output is None
    assert results[0].error.startswith(
        "slice positions are not evenly spaced: 8.00 mm between IM030003.dcm and IM030005.dcm, 4.00 mm elsewhere "
        "(a missing slice?)"
    )
    assert not list((tmp_path / "out").iterdir())
    assert folder_digest(tmp_path / "dicom") == before


def test_same_description_gets_series_numbers(tmp_path):
    write_series(tmp_path / "dicom" / "a", "T2 TSE", 3)
    write_series(tmp_path / "dicom" / "b", "T2 TSE", 7)
    names = sorted(r.output.name for r in convert_directory(tmp_path / "dicom", tmp_path / "out").results)
    assert names == ["T2_TSE_s3.nii.gz", "T2_TSE_s7.nii.gz"]


def test_existing_output_is_never_overwritten(tmp_path):
    write_series(tmp_path / "dicom", "T2 TSE", 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "T2_TSE.nii.gz").write_bytes(b"precious")
    with pytest.raises(DataError, match="output file already exists"):
        convert_directory(tmp_path / "dicom", tmp_path / "out")
    assert (tmp_path / "out" / "T2_TSE.nii.gz").read_bytes() == b"precious"


def test_folders_without_dicom(tmp_path):
    with pytest.raises(DataError, match="DICOM folder not found"):
        convert_directory(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no DICOM image files found in .*notes \(1 non-DICOM file skipped\)"):
        convert_directory(tmp_path / "notes", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no DICOM image files found in .*empty \(the folder is empty\)"):
        convert_directory(tmp_path / "empty", tmp_path / "out")


def test_real_single_slice_mr_from_pydicom_is_refused(tmp_path):
    """pydicom's MR_small.dcm is a real MR slice: one slice is not a 3D volume."""
    shutil.copy(PYDICOM_DATA / "MR_small.dcm", tmp_path / "MR_small.dcm")
    results = convert_directory(tmp_path, tmp_path / "out").results
    assert len(results) == 1 and results[0].output is None
    assert "too few slices" in results[0].error


def _volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def test_dual_echo_becomes_one_volume_per_echo_on_the_same_grid(tmp_path):
    paths = write_series(tmp_path / "dicom", "T2 DE", 4, variants=ECHOES, interleave=True)
    report = convert_directory(tmp_path / "dicom", tmp_path / "out")
    assert [(r.description, r.n_files, r.output.name) for r in report.results] == [
        ("T2 DE [echo1]", 8, "T2_DE_echo1.nii.gz"),
        ("T2 DE [echo2]", 8, "T2_DE_echo2.nii.gz"),
    ]
    assert sum(r.n_files for r in report.results) == len(paths) == 16  # every file used
    (first, affine1), (second, affine2) = (_volume(r.output) for r in report.results)
    assert first.shape == second.shape == (10, 12, 8)
    np.testing.assert_array_equal(affine1, affine2)
    np.testing.assert_array_equal(second, first + 1000)  # slice_pixels: echo 2 is 1000 brighter everywhere
    voxel = np.unravel_index(np.argmax(first), first.shape)
    np.testing.assert_allclose((affine1 @ np.array([*voxel, 1.0]))[:3], _marker_world_ras(), atol=1e-3)


def test_slices_numbered_out_of_order_are_stacked_by_position(tmp_path):
    """Before, dicom2nifti followed InstanceNumber and wrote a (10, 12, 2, 4) "volume" without complaint."""
    order = [5, 2, 8, 1, 7, 3, 6, 4]
    write_series(tmp_path / "dicom", edit=lambda ds, v, k: setattr(ds, "InstanceNumber", order[k]))
    (result,) = convert_directory(tmp_path / "dicom", tmp_path / "out").results
    data, _ = _volume(result.output)
    assert data.shape == (10, 12, 8)
    assert [int(data[0, 0, k]) for k in range(8)] == [100 + 10 * k for k in range(8)]  # slice k holds 100 + 10k
    assert pydicom.dcmread(tmp_path / "dicom" / "IM030000.dcm").InstanceNumber == 5  # the files are untouched


def test_compressed_pixel_data_that_can_be_decoded_is_converted(tmp_path):
    write_series(tmp_path / "dicom", edit=lambda ds, v, k: ds.compress(RLELossless))
    (result,) = convert_directory(tmp_path / "dicom", tmp_path / "out").results
    assert result.error is None and _volume(result.output)[0].shape == (10, 12, 8)


def test_duplicates_are_dropped_and_counted_and_other_files_skipped(tmp_path):
    paths = write_series(tmp_path / "dicom")
    shutil.copy(paths[2], tmp_path / "dicom" / "copy of IM2.dcm")
    (tmp_path / "dicom" / "README.txt").write_text("exported by PACS")
    report = convert_directory(tmp_path / "dicom", tmp_path / "out")
    assert [(r.n_files, r.duplicates) for r in report.results] == [(8, 1)]
    assert report.summary() == "1 volume converted, 0 refused; 1 duplicate file dropped; 1 non-DICOM file skipped"
    assert report.failure_line() is None


def test_an_echo_name_that_another_series_has_gets_the_uid_tail(tmp_path):
    write_series(tmp_path / "dicom" / "a", "T2", 3, variants=ECHOES)
    write_series(tmp_path / "dicom" / "b", "T2 echo1", 4)
    results = convert_directory(tmp_path / "dicom", tmp_path / "out").results
    names = sorted(r.output.name for r in results)
    assert len(names) == 3 and "T2_echo2.nii.gz" in names and len({n[:8] for n in names}) == 2
    assert sum(n.startswith("T2_echo1") for n in names) == 2  # T2_echo1.nii.gz and T2_echo1_<uid tail>.nii.gz


def test_echo_outputs_are_never_overwritten(tmp_path):
    write_series(tmp_path / "dicom", "T2 DE", variants=ECHOES)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "T2_DE_echo2.nii.gz").write_bytes(b"precious")
    with pytest.raises(DataError, match="output file already exists.*T2_DE_echo2.nii.gz"):
        convert_directory(tmp_path / "dicom", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["T2_DE_echo2.nii.gz"]


def test_report_lines():
    ok = SeriesResult("T1", 8, output=Path("T1.nii.gz"), duplicates=2)
    bad = SeriesResult("T2", 7, error="uneven slice spacing")
    broken = SeriesResult("a/IM1.dcm", 1, error="truncated", series=False)
    report = ConversionReport([ok, bad], not_dicom=2, not_images=1)
    assert report.summary() == (
        "1 volume converted, 1 refused; 2 duplicate files dropped; "
        "2 non-DICOM files and 1 DICOM file without an image skipped"
    )
    assert report.failure_line() == "series 'T2' not converted: uneven slice spacing"
    assert ConversionReport([broken, bad]).failure_line() == (
        "2 volumes or files not converted (listed above); file 'a/IM1.dcm' not converted: truncated"
    )
    assert ConversionReport([ok]).summary() == "1 volume converted, 0 refused; 2 duplicate files dropped"
