"""Real DICOM files for the conversion tests, written with pydicom (with real geometry tags), and checks of the
builders themselves (so that a failing conversion test is about the converter, not the test data).

The default series is sagittal int16 MR, one file per slice, 12 rows x 10 columns, slices 4 mm apart along
the LPS x axis, with a bright marker voxel. ``variants`` writes the same slice positions several times (echoes,
acquisitions, time points), each with its own pixel values, like a dual-echo sequence stored as one series.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROW_DIR, COL_DIR = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])  # sagittal, LPS patient axes
PIXEL_SPACING = (0.5, 0.6)  # (between rows, between columns) mm
SLICE_STEP = np.array([4.0, 0.0, 0.0])  # successive slices move 4 mm along LPS x
ORIGIN = np.array([-20.0, -50.0, 60.0])  # LPS position of the first slice's first pixel
MARKER = (3, 5, 2)  # (row, column, slice) of a bright voxel
SHAPE = (12, 10)  # (Rows, Columns)

Edit = Callable[[Dataset, int, int], None]  # (dataset, variant index, slice index) -> None, edits in place


def slice_pixels(k: int, variant: int = 0, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """int16 pixels of slice ``k`` of variant ``variant``: a level per slice and variant, plus the marker."""
    pixels = np.full(shape, 100 + 10 * k + 1000 * variant, np.int16)
    if k == MARKER[2]:
        pixels[MARKER[0], MARKER[1]] = 3000 + 1000 * variant
    return pixels


def mr_slice(k: int, series_uid: str, study_uid: str, description: str, number: int, instance: int) -> Dataset:
    """One classic single-frame MR image (file meta included) at slice position ``k`` of the default geometry."""
    pixels = slice_pixels(k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "MR", "anon", "anon"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, number, instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.ImageOrientationPatient = [*ROW_DIR, *COL_DIR]
    ds.ImagePositionPatient = list(ORIGIN + k * SLICE_STEP)
    ds.PixelSpacing, ds.SliceThickness = list(PIXEL_SPACING), 4.0
    ds.RepetitionTime, ds.EchoTime = 3000.0, 90.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.tobytes()
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Replace the pixel data of ``ds`` (and Rows/Columns) by the int16 array ``pixels``."""
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.astype(np.int16).tobytes()


def write_dataset(path: Path, ds: Dataset) -> None:
    """Write ``ds`` as a DICOM file (as a bare dataset when its file meta was removed, explicit little endian
    under a private transfer syntax)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta else None
    private = {"implicit_vr": False, "little_endian": True} if syntax is not None and syntax.is_private else {}
    pydicom.dcmwrite(path, ds, enforce_file_format=bool(meta), **private)


def write_series(
    folder: Path,
    description: str = "T2 TSE SAG",
    number: int = 3,
    n_slices: int = 8,
    *,
    drop: int | Sequence[int] = (),
    variants: Sequence[dict[str, Any]] = ({},),
    interleave: bool = False,
    edit: Edit | None = None,
) -> list[Path]:
    """Write one series into ``folder``; returns the files written, in the order of their (unedited) numbers.

    Args:
        drop: slice index or indices not written (in every variant): a missing slice.
        variants: tags set on every slice of each repetition of the slice positions, e.g.
            ``({"EchoNumbers": 1, "EchoTime": 20}, {"EchoNumbers": 2, "EchoTime": 90})``; each variant gets its
            own pixel values (``slice_pixels(k, variant)``).
        interleave: number the instances position by position (``e1 s1, e2 s1, e1 s2, ...``) rather than
            variant by variant.
        edit: called as ``edit(ds, variant, k)`` just before each file is written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    written = []
    dropped = {drop} if isinstance(drop, int) else set(drop)
    slices = [k for k in range(n_slices) if k not in dropped]
    for v, tags in enumerate(variants):
        for k in slices:
            instance = (k * len(variants) + v + 1) if interleave else (v * n_slices + k + 1)
            ds = mr_slice(k, series_uid, study_uid, description, number, instance)
            set_pixels(ds, slice_pixels(k, v))
            for keyword, value in tags.items():
                setattr(ds, keyword, value)
            if edit is not None:
                edit(ds, v, k)
            path = folder / f"IM{number:02d}{v}{k:03d}.dcm"
            write_dataset(path, ds)
            written.append((instance, path))
    return [path for _, path in sorted(written)]


# hostile variations, for the bad-input tests (tests/test_bad_inputs_dicom.py) ------------------------------------

Build = Callable[[Path], object]
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def at(index: int, change: Callable[[pydicom.Dataset], object], variant: int = 0):
    """An ``edit`` that changes slice ``index`` of ``variant`` only."""

    def edit(ds: pydicom.Dataset, v: int, k: int) -> None:
        if (v, k) == (variant, index):
            change(ds)

    return edit


def everywhere(change: Callable[[pydicom.Dataset], object]):
    return lambda ds, v, k: change(ds)


def remove(keyword: str) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: delattr(ds, keyword)


def tag(keyword: str, value: object) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: setattr(ds, keyword, value)


def truncated(fraction: float) -> Build:
    def build(folder: Path) -> None:
        path = write_series(folder)[3]
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return build


def with_extra(extra: Callable[[Path], None]) -> Build:
    """The default series plus whatever ``extra`` adds to the folder."""

    def build(folder: Path) -> None:
        write_series(folder)
        extra(folder)

    return build


def extra_slice_at_position_3(folder: Path) -> None:
    """A second, different image at the position of slice 3 (a re-scan of one slice, stored in the series)."""
    ds = pydicom.dcmread(write_series(folder)[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    set_pixels(ds, slice_pixels(3) + 7)
    write_dataset(folder / "IM_rescan.dcm", ds)


def rgb(ds: pydicom.Dataset, photometric: str = "RGB") -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((12, 10, 3), np.uint8).tobytes()


def compressed_garbage(syntax: str) -> Callable[[pydicom.Dataset], None]:
    def change(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\xff\xd8 not really compressed " * 4])

    return change


def multiframe(frames: int, enhanced: bool) -> Build:
    def build(folder: Path) -> None:
        ds = mr_slice(0, generate_uid(), generate_uid(), "T2 enhanced", 9, 1)
        if enhanced:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
        ds.NumberOfFrames = frames
        ds.PixelData = np.concatenate([slice_pixels(k) for k in range(frames)]).tobytes()
        write_dataset(folder / "enhanced.dcm", ds)

    return build


def shifted_after(index: int, mm: float):
    def change(ds: pydicom.Dataset, v: int, k: int) -> None:
        if k >= index:
            x, y, z = (float(c) for c in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x + mm, y, z]

    return change


def garbled_pixel_spacing(folder: Path) -> None:
    """PixelSpacing stored as ``abc\\0.6``: a value pydicom reads as text, not numbers."""
    path = write_series(folder)[2]
    path.write_bytes(path.read_bytes().replace(b"0.5\\0.6", b"abc\\0.6"))


def structured_report(path: Path) -> None:
    """A DICOM file without an image (a Basic Text SR), as PACS exports put next to the images."""
    ds = mr_slice(0, generate_uid(), generate_uid(), "report", 99, 1)
    for keyword in ("Rows", "Columns", "PixelData", "ImagePositionPatient", "ImageOrientationPatient"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.Modality = "SR"
    write_dataset(path, ds)


def folder_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path (to check that input is never modified)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_default_series_has_real_geometry(tmp_path):
    paths = write_series(tmp_path, n_slices=4)
    assert [p.name for p in paths] == ["IM030000.dcm", "IM030001.dcm", "IM030002.dcm", "IM030003.dcm"]
    ds = pydicom.dcmread(paths[2])
    assert [float(v) for v in ds.ImagePositionPatient] == [-12.0, -50.0, 60.0]  # -20 + 2 * 4
    assert ds.pixel_array.shape == SHAPE and ds.pixel_array[3, 5] == 3000 and ds.pixel_array[0, 0] == 120


def test_variants_repeat_the_positions_with_their_own_pixels(tmp_path):
    echoes = ({"EchoNumbers": 1, "EchoTime": 20.0}, {"EchoNumbers": 2, "EchoTime": 90.0})
    paths = write_series(tmp_path, n_slices=3, variants=echoes, interleave=True, drop=[1])
    headers = [pydicom.dcmread(p) for p in paths]
    assert [(int(h.InstanceNumber), int(h.EchoNumbers)) for h in headers] == [(1, 1), (2, 2), (5, 1), (6, 2)]
    assert [h.pixel_array[0, 0] for h in headers] == [100, 1100, 120, 1120]


def test_folder_digest_sees_every_byte(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1")
    before = folder_digest(tmp_path)
    (tmp_path / "a" / "x").write_bytes(b"2")
    assert folder_digest(tmp_path).keys() == before.keys() and folder_digest(tmp_path) != before
