"""Header -> slice record (endofed.data.dicom_headers) on hand-built pydicom datasets."""

from __future__ import annotations

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import MRImageStorage

from endofed.data.dicom_headers import record_from_header, sop_class, text_value
from endofed.data.dicom_series import SliceRecord

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def header(**tags: object) -> Dataset:
    """A complete axial MR slice header (no pixel data unless given); ``tags`` override or add values."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, "1.2.3.4", "MR"
    ds.Rows, ds.Columns = 12, 10
    ds.ImagePositionPatient = [-20, "-50.5", 60]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = ["0.5", "0.6"]
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def test_a_complete_header():
    ds = header(EchoNumbers=2, EchoTime="90", AcquisitionNumber=3, TemporalPositionIdentifier=4, PixelData=b"\0" * 4)
    assert record_from_header("a/IM1.dcm", ds) == SliceRecord(
        name="a/IM1.dcm",
        sop_uid="1.2.3.4",
        modality="MR",
        rows=12,
        columns=10,
        position=(-20.0, -50.5, 60.0),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        spacing=(0.5, 0.6),
        echo_number=2,
        echo_time=90.0,
        acquisition=3,
        temporal=4,
    )


def test_absent_values_are_none_and_the_name_stands_in_for_the_uid():
    record = record_from_header("IM1", Dataset())
    assert record == SliceRecord(name="IM1", sop_uid="IM1", has_pixels=False)


def test_empty_values_count_as_absent():
    record = record_from_header("IM1", header(PixelSpacing="", EchoNumbers=None))
    assert (record.spacing, record.echo_number, record.problem) == (None, None, None)


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ({"ImagePositionPatient": [1, 2]}, "ImagePositionPatient is ['1.0', '2.0'], expected 3 numbers"),
        ({"PixelSpacing": ["nan", "0.5"]}, "PixelSpacing is ['nan', '0.5'], expected 2 numbers"),
        ({"ImageOrientationPatient": [0] * 6}, "ImageOrientationPatient [0.0, 0.0, 0.0, 0.0, 0.0, 0.0] is not two"),
        ({"ImageOrientationPatient": [1, 0, 0, 1, 0, 0]}, "ImageOrientationPatient [1.0, 0.0, 0.0, 1.0, 0.0, 0.0] is"),
        ({"PixelSpacing": [0, 0.5]}, "PixelSpacing [0.0, 0.5] is not positive"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_malformed_values_become_the_problem(tags, problem):
    record = record_from_header("IM1", header(**tags))
    assert record.problem is not None and record.problem.startswith(problem)
    assert (record.name, record.sop_uid) == ("IM1", "1.2.3.4")


def test_a_stored_value_that_is_not_a_number_becomes_the_problem():
    """As read from a file: the raw bytes of a DS are converted only when the value is used."""
    ds = header()
    tag = Tag("PixelSpacing")
    ds[tag] = RawDataElement(tag, "DS", 7, b"abc\\0.6", 0, False, True)
    assert record_from_header("IM1", ds).problem == "PixelSpacing is ['abc', '0.6'], expected 2 numbers"


def test_several_echo_numbers_use_the_first():
    assert record_from_header("IM1", header(EchoNumbers=[2, 1])).echo_number == 2


def test_frames_colour_and_enhanced():
    record = record_from_header("IM1", header(NumberOfFrames="8", SamplesPerPixel=3, SOPClassUID=ENHANCED_MR))
    assert (record.frames, record.samples, record.enhanced) == (8, 3, True)
    ds = header()
    del ds.SOPClassUID
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR  # only the file meta says so
    assert record_from_header("IM1", ds).enhanced and sop_class(ds) == ENHANCED_MR


def test_text_value():
    ds = header(SeriesDescription="  T2 TSE  ")
    assert text_value(ds, "SeriesDescription") == "T2 TSE"
    assert text_value(ds, "SeriesNumber") == ""
