from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from endofed.data.dicom import convert_directory, safe_name
from endofed.data.nifti import load_volume
from endofed.errors import DataError

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
ROW_DIR, COL_DIR = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])  # sagittal, LPS patient axes
PIXEL_SPACING = (0.5, 0.6)  # (between rows, between columns) mm
SLICE_STEP = np.array([4.0, 0.0, 0.0])  # successive slices move 4 mm along LPS x
ORIGIN = np.array([-20.0, -50.0, 60.0])  # LPS position of the first slice's first pixel
MARKER = (3, 5, 2)  # (row, column, slice) of a bright voxel


def write_series(folder: Path, description: str, number: int, n_slices: int = 8, drop: int | None = None) -> None:
    """A sagittal int16 MR series written with pydicom, one file per slice, with a bright marker voxel."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    for k in range(n_slices):
        if k == drop:
            continue
        pixels = np.full((12, 10), 100, np.int16)
        if k == MARKER[2]:
            pixels[MARKER[0], MARKER[1]] = 3000
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "MR", "anon", "anon"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, number, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.ImageOrientationPatient = [*ROW_DIR, *COL_DIR]
        ds.ImagePositionPatient = list(ORIGIN + k * SLICE_STEP)
        ds.PixelSpacing, ds.SliceThickness = list(PIXEL_SPACING), 4.0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = pixels.tobytes()
        pydicom.dcmwrite(folder / f"IM{number:02d}{k:03d}.dcm", ds, enforce_file_format=True)


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
    results = convert_directory(tmp_path / "dicom", tmp_path / "out")
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
    write_series(tmp_path / "dicom", "T2 TSE SAG", 3, drop=4)
    before = sorted(p.name for p in (tmp_path / "dicom").iterdir())
    results = convert_directory(tmp_path / "dicom", tmp_path / "out")
    assert len(results) == 1 and results[0].output is None
    assert "slice positions are not evenly spaced (a slice is missing or duplicated)" in results[0].error
    assert not list((tmp_path / "out").iterdir())
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == before


def test_same_description_gets_series_numbers(tmp_path):
    write_series(tmp_path / "dicom" / "a", "T2 TSE", 3)
    write_series(tmp_path / "dicom" / "b", "T2 TSE", 7)
    names = sorted(r.output.name for r in convert_directory(tmp_path / "dicom", tmp_path / "out"))
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
    with pytest.raises(DataError, match=r"no DICOM image files found in .*notes \(1 other files skipped\)"):
        convert_directory(tmp_path / "notes", tmp_path / "out")


def test_real_single_slice_mr_from_pydicom_is_refused(tmp_path):
    """pydicom's MR_small.dcm is a real MR slice: one slice is not a 3D volume."""
    shutil.copy(PYDICOM_DATA / "MR_small.dcm", tmp_path / "MR_small.dcm")
    results = convert_directory(tmp_path, tmp_path / "out")
    assert len(results) == 1 and results[0].output is None
    assert "too few slices" in results[0].error
