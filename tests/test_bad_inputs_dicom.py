"""Hostile and broken DICOM input, end to end through ``endofed data convert`` (issue 15, items 2 and 4).

Real DICOM files written by pydicom (real geometry tags, tests/data/test_dicom_builders.py). A refused input
must end with exactly one ``endofed: error:`` line naming the file or series and the cause, exit non-zero,
print no traceback and no "unexpected" error, and leave the DICOM folder byte for byte unchanged. An input that
can be converted (repeated positions explained by echo, acquisition or time point; duplicates; stray files)
must be converted completely: every file used, the right volumes and shapes, the skipped files counted.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from endofed.cli.main import main as endofed_main
from tests.data.test_dicom_builders import (
    at,
    compressed_garbage,
    everywhere,
    extra_slice_at_position_3,
    folder_digest,
    garbled_pixel_spacing,
    multiframe,
    remove,
    rgb,
    set_pixels,
    shifted_after,
    slice_pixels,
    structured_report,
    tag,
    truncated,
    with_extra,
    write_series,
)

Build = Callable[[Path], object]
ECHOES = ({"EchoNumbers": 1, "EchoTime": 20.0}, {"EchoNumbers": 2, "EchoTime": 90.0})
VOLUME = (10, 12, 8)  # Columns x Rows x slices of the default series


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], build: Build, out: Path | None = None):
    """Build the input, run the real command, check what every case must satisfy; returns (code, out, err)."""
    source = tmp_path / "dicom"
    source.mkdir()
    build(source)
    before = folder_digest(source)
    capsys.readouterr()
    code = endofed_main(["data", "convert", str(source), str(out or tmp_path / "out")])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text, text
    assert folder_digest(source) == before, "the DICOM folder was modified"
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("endofed: error:")]


def assert_refused(tmp_path, capsys, build: Build, expected: str, out: Path | None = None) -> str:
    code, _, err = run(tmp_path, capsys, build, out)
    errors = error_lines(err)
    assert code != 0, err
    assert len(errors) == 1, err
    assert re.search(expected, errors[0]), f"expected {expected!r} in:\n{err}"
    assert "unexpected" not in errors[0] and "Error:" not in errors[0], errors[0]  # no raw exception names
    return err


# refused inputs: (builder, what the one error line must say) ----------------------------------------------------

UNEXPLAINED = r"are at the same slice position with different pixels, and no EchoNumbers, EchoTime"
NO_PIXELS = r"has no pixel data \(a truncated file or a broken export\?\)"
GEOMETRY = r"has no {} \(needed for the volume geometry\)"
UNDECODABLE = r"IM030000\.dcm.*: pixel data cannot be decoded \(transfer syntax "
MULTIFRAME = r"series 'T2 enhanced' not converted: enhanced\.dcm: enhanced multi-frame DICOM .* is not supported"
UNEVEN = r"'T2 TSE SAG' not converted: slice positions are not evenly spaced: [\d.]+ mm between IM\d+\.dcm and \S+\.dcm"
COLOUR = r"colour image \(SamplesPerPixel 3\) refused"


def _missing_geometry() -> dict[str, tuple[Build, str]]:
    """A geometry tag missing from one file (named in the line) or from every file."""
    cases: dict[str, tuple[Build, str]] = {}
    for name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        cases[f"one file without {name}"] = (
            lambda d, n=name: write_series(d, edit=at(3, remove(n))),
            r"IM030003\.dcm: " + GEOMETRY.format(name),
        )
        cases[f"no {name}"] = (lambda d, n=name: write_series(d, edit=everywhere(remove(n))), GEOMETRY.format(name))
    return cases


MISSING_GEOMETRY = _missing_geometry()

REFUSED: dict[str, tuple[Build, str]] = {
    # repeated slice positions that no tag explains
    "repeats without tags": (lambda d: write_series(d, variants=({}, {})), UNEXPLAINED),
    "repeats with the same echo": (lambda d: write_series(d, variants=({"EchoNumbers": 1},) * 2), UNEXPLAINED),
    "repeats, acquisition per file": (
        lambda d: write_series(
            d, variants=({}, {}), edit=lambda ds, v, k: setattr(ds, "AcquisitionNumber", 10 * v + k)
        ),
        UNEXPLAINED,
    ),
    "one re-scanned slice": (extra_slice_at_position_3, r"IM030003\.dcm and IM_rescan\.dcm are at the same slice"),
    # files without pixel data
    "one file without pixels": (
        lambda d: write_series(d, edit=at(3, remove("PixelData"))),
        r"IM030003\.dcm: " + NO_PIXELS,
    ),
    "no file with pixels": (
        lambda d: write_series(d, edit=everywhere(remove("PixelData"))),
        r"IM030000\.dcm \(and 7 more files\): " + NO_PIXELS,
    ),
    "echo 2 file without pixels": (
        lambda d: write_series(d, variants=ECHOES, edit=at(5, remove("PixelData"), variant=1)),
        r"IM031005\.dcm: " + NO_PIXELS,
    ),
    # series that mix what one volume cannot
    "one CT slice": (
        lambda d: write_series(d, edit=at(2, tag("Modality", "CT"))),
        r"mixes modalities: MR \(7 files.* CT \(1 file, e.g. IM030002",
    ),  # fmt: skip
    "half CT": (
        lambda d: write_series(d, edit=lambda ds, v, k: setattr(ds, "Modality", "CT" if k % 2 else "MR")),
        r"mixes modalities: (MR|CT) \(4 files",
    ),  # fmt: skip
    "one OT slice": (
        lambda d: write_series(d, edit=at(7, tag("Modality", "OT"))),
        r"mixes modalities: MR .* OT \(1 file, e.g. IM030007",
    ),  # fmt: skip
    "one 16 x 16 slice": (
        lambda d: write_series(d, edit=at(5, lambda ds: set_pixels(ds, np.zeros((16, 16))))),
        r"mixes image sizes \(Rows x Columns\): 12 x 10 .* 16 x 16 \(1 file, e.g. IM030005",
    ),  # fmt: skip
    "one square slice": (
        lambda d: write_series(d, edit=at(0, lambda ds: set_pixels(ds, np.zeros((12, 12))))),
        r"mixes image sizes .* 12 x 12",
    ),  # fmt: skip
    "one transposed slice": (
        lambda d: write_series(d, edit=at(4, lambda ds: set_pixels(ds, np.zeros((10, 12))))),
        r"mixes image sizes .* 10 x 12",
    ),  # fmt: skip
    "one axial slice": (
        lambda d: write_series(d, edit=at(4, tag("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]))),
        r"mixes orientations .* \[1, 0, 0, 0, 1, 0\] \(1 file, e.g. IM030004",
    ),  # fmt: skip
    "one coronal slice": (
        lambda d: write_series(d, edit=at(1, tag("ImageOrientationPatient", [1, 0, 0, 0, 0, -1]))),
        r"mixes orientations",
    ),  # fmt: skip
    "one slice tilted 10 degrees": (
        lambda d: write_series(
            d, edit=at(6, tag("ImageOrientationPatient", [0, 0.98481, -0.17365, 0, 0.17365, 0.98481]))
        ),  # fmt: skip
        r"mixes orientations",
    ),
    # geometry missing or unusable
    **MISSING_GEOMETRY,
    "ImagePositionPatient with 2 values": (
        lambda d: write_series(d, edit=at(2, tag("ImagePositionPatient", [1, 2]))),
        r"IM030002\.dcm: ImagePositionPatient is .*expected 3 numbers",
    ),  # fmt: skip
    "PixelSpacing that is not a number": (
        garbled_pixel_spacing,
        r"IM030002\.dcm: PixelSpacing is \['abc', '0.6'\], expected 2 numbers",
    ),  # fmt: skip
    "ImageOrientationPatient all zero": (
        lambda d: write_series(d, edit=at(1, tag("ImageOrientationPatient", [0] * 6))),
        r"IM030001\.dcm: ImageOrientationPatient .* is not two perpendicular unit vectors",
    ),  # fmt: skip
    # truncated files
    "truncated in the pixel data": (
        truncated(0.95),
        r"IM030003\.dcm: pixel data cannot be decoded .*fewer pixel bytes .*truncated",
    ),  # fmt: skip
    "truncated just before the pixel data": (truncated(0.75), r"IM030003\.dcm: " + NO_PIXELS),
    "truncated in the header": (
        truncated(0.3),
        r"file 'IM030003\.dcm' not converted: DICOM image without a SeriesInstanceUID \(truncated",
    ),  # fmt: skip
    # pixel data that cannot be decoded
    "private transfer syntax": (
        lambda d: write_series(
            d, edit=everywhere(lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4.5.6"))
        ),
        UNDECODABLE + r"1\.2\.3\.4\.5\.6\): no decoder",
    ),  # fmt: skip
    "corrupt JPEG": (
        lambda d: write_series(d, edit=everywhere(compressed_garbage(JPEGBaseline8Bit))),
        UNDECODABLE + "JPEG Baseline",
    ),  # fmt: skip
    "corrupt JPEG 2000": (
        lambda d: write_series(d, edit=everywhere(compressed_garbage(JPEG2000Lossless))),
        UNDECODABLE + "JPEG 2000",
    ),  # fmt: skip
    "corrupt RLE": (
        lambda d: write_series(d, edit=everywhere(compressed_garbage(RLELossless))),
        UNDECODABLE + "RLE Lossless",
    ),  # fmt: skip
    # multi-frame files
    "enhanced MR, 8 frames": (multiframe(8, enhanced=True), MULTIFRAME),
    "enhanced MR, 1 frame": (multiframe(1, enhanced=True), MULTIFRAME),
    "classic MR with 4 frames": (multiframe(4, enhanced=False), MULTIFRAME),
    # missing slices and uneven gaps
    "a missing slice": (lambda d: write_series(d, drop=[4]), UNEVEN + r", 4.00 mm elsewhere \(a missing slice\?\)"),
    "two missing slices": (lambda d: write_series(d, n_slices=10, drop=[2, 6]), UNEVEN),
    "a 2 mm shift": (
        lambda d: write_series(d, edit=shifted_after(5, 2.0)),
        r"slice positions are not evenly spaced: 6.00 mm between IM030004\.dcm and IM030005\.dcm",
    ),  # fmt: skip
    "a slice between two": (
        lambda d: write_series(d, n_slices=10, edit=shifted_after(5, -2.0)),
        r"2.00 mm between IM030004\.dcm and IM030005\.dcm.*\(an extra slice\?\)",
    ),  # fmt: skip
    # colour
    "RGB series": (lambda d: write_series(d, edit=everywhere(rgb)), r"IM030000\.dcm \(and 7 more files\): " + COLOUR),
    "one RGB slice": (lambda d: write_series(d, edit=at(3, rgb)), r"IM030003\.dcm: " + COLOUR),
    "YBR series": (lambda d: write_series(d, edit=everywhere(lambda ds: rgb(ds, "YBR_FULL"))), COLOUR),
    # nothing to convert
    "only a text file": (
        lambda d: (d / "notes.txt").write_text("hello"),
        r"no DICOM image files found in .* \(1 non-DICOM file skipped\)",
    ),  # fmt: skip
    "only an empty file": (lambda d: (d / "IM0001").write_bytes(b""), r"no DICOM image files found .*1 non-DICOM file"),
    "only a structured report": (
        lambda d: structured_report(d / "SR.dcm"),
        r"no DICOM image files found .* \(1 DICOM file without an image skipped\)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_one_clear_line(case, tmp_path, capsys):
    build, expected = REFUSED[case]
    assert_refused(tmp_path, capsys, build, expected)
    assert not list((tmp_path / "out").glob("*.nii.gz")), "a refused series left a volume behind"


# converted inputs: (builder, {output: shape}, what the summary line must say) ----------------------------------

TWO = {"T2_TSE_SAG_{}1.nii.gz": VOLUME, "T2_TSE_SAG_{}2.nii.gz": VOLUME}
ONE = {"T2_TSE_SAG.nii.gz": VOLUME}

CONVERTED: dict[str, tuple[Build, dict[str, tuple[int, ...]], str]] = {
    "dual echo": (
        lambda d: write_series(d, variants=ECHOES),
        {k.format("echo"): v for k, v in TWO.items()},
        "^2 volumes converted, 0 refused$",
    ),  # fmt: skip
    "dual echo, interleaved numbers": (
        lambda d: write_series(d, variants=ECHOES, interleave=True),
        {k.format("echo"): v for k, v in TWO.items()},
        "^2 volumes",
    ),  # fmt: skip
    "dual echo, echo time only": (
        lambda d: write_series(d, variants=({"EchoTime": 90.0}, {"EchoTime": 20.0})),
        {k.format("echo"): v for k, v in TWO.items()},
        "^2 volumes",
    ),  # fmt: skip
    "dual echo, identical pixels": (
        lambda d: write_series(d, variants=ECHOES, edit=lambda ds, v, k: set_pixels(ds, slice_pixels(k))),
        {k.format("echo"): v for k, v in TWO.items()},
        "^2 volumes",
    ),  # fmt: skip
    "two acquisitions": (
        lambda d: write_series(d, variants=({"AcquisitionNumber": 1}, {"AcquisitionNumber": 2})),
        {k.format("acq"): v for k, v in TWO.items()},
        "^2 volumes",
    ),  # fmt: skip
    "two time points": (
        lambda d: write_series(d, variants=({"TemporalPositionIdentifier": 1}, {"TemporalPositionIdentifier": 2})),
        {k.format("t"): v for k, v in TWO.items()},
        "^2 volumes",
    ),  # fmt: skip
    "a copied file": (
        with_extra(lambda d: shutil.copy(d / "IM030002.dcm", d / "IM030002 (copy).dcm")),
        ONE,
        "; 1 duplicate file dropped$",
    ),  # fmt: skip
    "a copy in a subfolder": (
        with_extra(lambda d: (d / "again").mkdir() or shutil.copy(d / "IM030005.dcm", d / "again")),
        ONE,
        "; 1 duplicate file dropped$",
    ),  # fmt: skip
    "every file twice": (
        with_extra(lambda d: [shutil.copy(p, d / f"dup-{p.name}") for p in sorted(d.glob("IM*"))]),
        ONE,
        "; 8 duplicate files dropped$",
    ),  # fmt: skip
    "a text file": (
        with_extra(lambda d: (d / "README.txt").write_text("exported by PACS")),
        ONE,
        "; 1 non-DICOM file skipped$",
    ),  # fmt: skip
    "a binary file": (
        with_extra(lambda d: (d / "viewer.exe").write_bytes(os.urandom(4096))),
        ONE,
        "; 1 non-DICOM file skipped$",
    ),  # fmt: skip
    "an empty file and a folder of notes": (
        with_extra(lambda d: ((d / "x").write_bytes(b""), (d / "n").mkdir(), (d / "n" / "a.md").write_text("#"))),
        ONE,
        "; 2 non-DICOM files skipped$",
    ),  # fmt: skip
    "a structured report": (
        with_extra(lambda d: structured_report(d / "SR.dcm")),
        ONE,
        "; 1 DICOM file without an image skipped$",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(CONVERTED))
def test_converted_completely(case, tmp_path, capsys):
    build, volumes, summary = CONVERTED[case]
    code, _, err = run(tmp_path, capsys, build)
    assert code == 0 and not error_lines(err), err
    assert re.search(summary, err.strip().splitlines()[-1]), err
    written = {p.name: nib.load(p).shape for p in sorted((tmp_path / "out").glob("*.nii.gz"))}
    assert written == volumes
    used = sum(int(n) for n in re.findall(r"^  ok    .*\((\d+) files", err, flags=re.MULTILINE))
    assert used == 8 * len(volumes), err  # every slice of every volume: nothing dropped but true duplicates


def test_a_dual_echo_with_a_missing_slice_in_echo_2_converts_echo_1_only(tmp_path, capsys):
    def build(folder: Path) -> None:
        write_series(folder, variants=ECHOES)
        (folder / "IM031004.dcm").unlink()

    err = assert_refused(
        tmp_path, capsys, build, r"series 'T2 TSE SAG \[echo2\]' not converted: slice positions are not evenly spaced"
    )
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["T2_TSE_SAG_echo1.nii.gz"]
    assert nib.load(tmp_path / "out" / "T2_TSE_SAG_echo1.nii.gz").shape == VOLUME
    assert "1 volume converted, 1 refused" in err


@pytest.mark.parametrize("where", ["inside", "same", "symlink"])
def test_output_inside_the_dicom_folder_is_refused(where, tmp_path, capsys):
    source = tmp_path / "dicom"
    out = {"inside": source / "nifti", "same": source, "symlink": tmp_path / "link" / "nifti"}[where]
    if where == "symlink":
        (tmp_path / "link").symlink_to(source, target_is_directory=True)
    assert_refused(tmp_path, capsys, lambda d: write_series(d), r"OUT_DIR .*source data is read-only", out=out)
    assert sorted(p.name for p in source.iterdir()) == [f"IM03000{k}.dcm" for k in range(8)]
