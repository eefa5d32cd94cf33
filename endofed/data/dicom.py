"""DICOM series -> NIfTI, one file per series, named by series description (``endofed data convert``).

Grouping by ``SeriesInstanceUID`` is done with pydicom; the conversion itself (slice ordering, affine from
ImagePositionPatient/ImageOrientationPatient, vendor quirks, and the check that slices are evenly spaced)
is dicom2nifti's. A series with a missing slice is refused with a clear reason rather than written as a
silently wrong volume. The DICOM folder is only read; existing output files are never overwritten.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from dicom2nifti import convert_dicom
from dicom2nifti.exceptions import ConversionError, ConversionValidationError
from pydicom.errors import InvalidDicomError

from endofed.errors import DataError

_REASONS = {
    "SLICE_INCREMENT_INCONSISTENT": "slice positions are not evenly spaced (a slice is missing or duplicated)",
    "NOT_A_VOLUME": "not a 3D volume (too few slices)",
    "TOO_FEW_SLICES/LOCALIZER": "too few slices for a 3D volume (or a localizer)",
    "NON_IMAGING_DICOM_FILES": "not an imaging series",
    "IMAGE_ORIENTATION_INCONSISTENT": "slices have different orientations",
    "SLICE_COUNT_INCONSISTENT": "slice count is inconsistent",
    "MISSING_DICOM_FILES": "DICOM files are missing from the series",
}


@dataclass(frozen=True)
class SeriesResult:
    """Outcome of converting one series.

    Attributes:
        description: the series description (or ``series_<number>``).
        n_files: number of DICOM files in the series.
        output: the NIfTI written, or ``None`` when the series failed.
        error: the reason it failed, else ``None``.
    """

    description: str
    n_files: int
    output: Path | None = None
    error: str | None = None


def safe_name(text: str) -> str:
    """File-system-safe version of a series description: ``"T2 TSE sag"`` -> ``"T2_TSE_sag"``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return cleaned or "series"


def group_series(dicom_dir: Path) -> tuple[dict[str, list[tuple[Path, pydicom.Dataset]]], int]:
    """Read the headers of every file under ``dicom_dir`` (recursively) and group images by SeriesInstanceUID.

    Pixel data is not read here (a folder may hold several exams); ``convert_directory`` reads one series
    at a time.

    Returns:
        ``(series uid -> [(path, header)], number of files skipped as not DICOM images)``.
    """
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    skipped = 0
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            skipped += 1
            continue
        if "SeriesInstanceUID" not in header or "Rows" not in header:
            skipped += 1
            continue
        series[str(header.SeriesInstanceUID)].append((path, header))
    return dict(series), skipped


def _describe(first: pydicom.Dataset) -> str:
    """Series description of a series (from its first header), falling back to its number."""
    text = str(getattr(first, "SeriesDescription", "") or "").strip()
    return text or f"series_{getattr(first, 'SeriesNumber', 'unknown')}"


def _output_names(headers: dict[str, pydicom.Dataset]) -> dict[str, str]:
    """File stem per series: the safe description, plus the series number when descriptions collide."""
    stems = {uid: safe_name(_describe(header)) for uid, header in headers.items()}
    counts: dict[str, int] = defaultdict(int)
    for stem in stems.values():
        counts[stem] += 1
    names = {}
    for uid, stem in stems.items():
        number = getattr(headers[uid], "SeriesNumber", None)
        names[uid] = f"{stem}_s{number}" if counts[stem] > 1 and number is not None else stem
    if len(set(names.values())) != len(names):  # same description and number: fall back to the UID tail
        names = {uid: f"{name}_{uid[-8:]}" for uid, name in names.items()}
    return names


def convert_series(datasets: list[pydicom.Dataset], output: Path) -> None:
    """Convert one series with dicom2nifti (original orientation kept); raise ``DataError`` on failure."""
    quiet = logging.getLogger("dicom2nifti")
    previous = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its reasons come back as exceptions; we report them ourselves
    try:
        convert_dicom.dicom_array_to_nifti(datasets, str(output), reorient_nifti=False)
    except ConversionValidationError as exc:
        code = str(exc.args[0]) if exc.args else "INVALID"
        raise DataError(_REASONS.get(code, code), "dicom_invalid") from None
    except (ConversionError, ValueError, KeyError, AttributeError, IndexError, NotImplementedError) as exc:
        raise DataError(f"cannot convert: {type(exc).__name__}: {exc}", "dicom_invalid") from None
    finally:
        quiet.setLevel(previous)


def convert_directory(
    dicom_dir: Path, out_dir: Path, on_series: Callable[[SeriesResult], None] | None = None
) -> list[SeriesResult]:
    """Convert every series under ``dicom_dir`` into ``out_dir/<description>.nii.gz``.

    Raises:
        DataError: ``dicom_dir`` is not a folder, holds no DICOM image, or an output file already exists.
    """
    dicom_dir, out_dir = Path(dicom_dir), Path(out_dir)
    if not dicom_dir.is_dir():
        raise DataError(f"DICOM folder not found: {dicom_dir}", "missing_file")
    groups, skipped = group_series(dicom_dir)
    if not groups:
        raise DataError(f"no DICOM image files found in {dicom_dir} ({skipped} other files skipped)", "no_cases")
    names = _output_names({uid: members[0][1] for uid, members in groups.items()})
    outputs = {uid: out_dir / f"{names[uid]}.nii.gz" for uid in groups}
    existing = [str(p) for p in outputs.values() if p.exists()]
    if existing:
        raise DataError(f"output file already exists (not overwriting): {existing[0]}", "exists")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for uid in sorted(groups, key=lambda u: names[u]):
        members = groups[uid]
        description = _describe(members[0][1])
        try:
            convert_series([pydicom.dcmread(path) for path, _ in members], outputs[uid])
            result = SeriesResult(description, len(members), output=outputs[uid])
        except DataError as exc:
            outputs[uid].unlink(missing_ok=True)  # never leave a partial volume behind
            result = SeriesResult(description, len(members), error=str(exc))
        results.append(result)
        if on_series is not None:
            on_series(result)
    return results
