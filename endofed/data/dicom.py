"""DICOM series -> NIfTI, one file per volume, named by series description (``endofed data convert``).

Every file under the DICOM folder is looked at once. What happens to each kind (decided for a hospital user,
who exports a study folder from PACS or a CD and wants every usable volume, and a clear reason for the rest):

- not DICOM at all (text, PDF, a viewer program): skipped and counted in the summary;
- DICOM without an image (DICOMDIR, structured reports, presentation states): skipped and counted;
- a DICOM image that cannot be used (truncated or corrupt, no pixel data, no geometry, pixel data that cannot
  be decoded, colour, enhanced multi-frame): its series is refused, naming the file and the cause;
- a series that mixes modalities, image sizes, orientations or pixel spacings: refused, naming the files;
- slice positions that repeat (e.g. a dual-echo sequence in one series): split into one volume per echo,
  acquisition or time point (``<name>_echo1.nii.gz``, ...; ``endofed.data.dicom_series.split_repeats``);
  exact duplicate files are dropped and counted; repeats nothing explains are refused;
- a missing slice or uneven spacing: refused, never written as a volume with misplaced slices, never filled in.

The header checks are pure functions in ``endofed.data.dicom_series``; the conversion itself (affine from
ImagePositionPatient/ImageOrientationPatient, vendor quirks) is dicom2nifti's. The DICOM folder is only read
(slices are renumbered in memory for dicom2nifti, never on disk); existing output files are never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pydicom
from dicom2nifti import convert_dicom
from dicom2nifti.exceptions import ConversionError, ConversionValidationError
from pydicom.errors import InvalidDicomError

from endofed.data.dicom_headers import record_from_header, sop_class, text_value
from endofed.data.dicom_report import ConversionReport, SeriesResult
from endofed.data.dicom_series import (
    SliceRecord,
    check_series,
    check_spacing,
    drop_duplicates,
    slice_offsets,
    split_repeats,
)
from endofed.errors import DataError

__all__ = ["ConversionReport", "SeriesResult", "convert_directory", "safe_name", "scan_folder"]

logger = logging.getLogger(__name__)

_REASONS = {
    "SLICE_INCREMENT_INCONSISTENT": "slice positions are not evenly spaced (a slice is missing or duplicated)",
    "NOT_A_VOLUME": "not a 3D volume (too few slices)",
    "TOO_FEW_SLICES/LOCALIZER": "too few slices for a 3D volume (or a localizer)",
    "NON_IMAGING_DICOM_FILES": "not an imaging series",
    "IMAGE_ORIENTATION_INCONSISTENT": "slices have different orientations",
    "SLICE_COUNT_INCONSISTENT": "slice count is inconsistent",
    "MISSING_DICOM_FILES": "DICOM files are missing from the series",
    "NON_CUBICAL_IMAGE/GANTRY_TILT": "slices are not stacked at right angles to the image plane (gantry tilt?)",
}

DEFER_SIZE = "4 KB"  # the header scan leaves larger values (the pixel data) on disk
# What reading or decoding a hostile file can raise (pydicom, its decoder plugins, numpy); named per file.
_READ_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, EOFError, RuntimeError, OSError)


def safe_name(text: str) -> str:
    """File-system-safe version of a series description: ``"T2 TSE sag"`` -> ``"T2_TSE_sag"``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return cleaned or "series"


@dataclass
class FolderScan:
    """The headers of a DICOM folder, grouped by SeriesInstanceUID.

    Attributes:
        series: series uid -> slice records, in file-name order.
        described: series uid -> (SeriesDescription, SeriesNumber) of its first file, ``""`` when absent.
        paths: record name (path relative to the folder) -> file.
        broken: DICOM files that belong to no readable series (e.g. truncated before their series uid).
        not_dicom: files skipped as not DICOM.
        not_images: DICOM files skipped as holding no image.
    """

    series: dict[str, list[SliceRecord]] = field(default_factory=lambda: defaultdict(list))
    described: dict[str, tuple[str, str]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    broken: list[SeriesResult] = field(default_factory=list)
    not_dicom: int = 0
    not_images: int = 0


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's and dicom2nifti's warnings: every problem comes back to the user as one reason of ours."""
    loggers = [logging.getLogger(name) for name in ("pydicom", "dicom2nifti")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _is_image(header: pydicom.Dataset) -> bool:
    """Whether a DICOM file claims to be an image (image tags, or an image storage SOP class)."""
    klass = sop_class(header)
    return "Rows" in header or "PixelData" in header or (klass is not None and "Image Storage" in klass.name)


def _scan_file(scan: FolderScan, path: Path, name: str) -> None:
    """Add one file to ``scan``: as a slice of its series, as broken, or as skipped."""
    try:
        header = pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except InvalidDicomError:
        logger.info("skipped %s: not a DICOM file", name)
        scan.not_dicom += 1
        return
    except OSError as exc:
        scan.broken.append(SeriesResult(name, 1, error=f"cannot read: {exc.strerror or exc}", series=False))
        return
    except _READ_ERRORS as exc:
        error = f"unreadable DICOM file (truncated or corrupt?): {str(exc)[:200]}"
        scan.broken.append(SeriesResult(name, 1, error=error, series=False))
        return
    try:
        _add_header(scan, header, path, name)
    except _READ_ERRORS as exc:  # a value pydicom cannot convert (e.g. a UID or description with bad bytes)
        error = f"unreadable DICOM header: {type(exc).__name__}: {str(exc)[:200]}"
        scan.broken.append(SeriesResult(name, 1, error=error, series=False))


def _add_header(scan: FolderScan, header: pydicom.Dataset, path: Path, name: str) -> None:
    """Add one DICOM header to ``scan``: as a slice of its series, as broken, or as skipped."""
    if not _is_image(header):
        if len(header) == 0:  # the file meta and nothing after it
            scan.broken.append(SeriesResult(name, 1, error="DICOM file without a data set (truncated?)", series=False))
        else:
            logger.info("skipped %s: DICOM without an image (%s)", name, sop_class(header) or "unknown SOP class")
            scan.not_images += 1
        return
    uid = text_value(header, "SeriesInstanceUID")
    if not uid:
        error = "DICOM image without a SeriesInstanceUID (truncated or incomplete file?)"
        scan.broken.append(SeriesResult(name, 1, error=error, series=False))
        return
    scan.series[uid].append(record_from_header(name, header))
    scan.described.setdefault(uid, (text_value(header, "SeriesDescription"), text_value(header, "SeriesNumber")))
    scan.paths[name] = path


def scan_folder(dicom_dir: Path) -> FolderScan:
    """Read the header of every file under ``dicom_dir`` (recursively; pixel data stays on disk)."""
    scan = FolderScan()
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        _scan_file(scan, path, path.relative_to(dicom_dir).as_posix())
    scan.series = dict(scan.series)
    return scan


def _describe(described: tuple[str, str]) -> str:
    """Description of a series from ``(SeriesDescription, SeriesNumber)``, falling back to its number."""
    description, number = described
    return description or f"series_{number or 'unknown'}"


def _output_names(described: dict[str, tuple[str, str]]) -> dict[str, str]:
    """File stem per series: the safe description, plus the series number when descriptions collide."""
    stems = {uid: safe_name(_describe(value)) for uid, value in described.items()}
    counts: dict[str, int] = defaultdict(int)
    for stem in stems.values():
        counts[stem] += 1
    names = {}
    for uid, stem in stems.items():
        number = described[uid][1]
        names[uid] = f"{stem}_s{safe_name(number)}" if counts[stem] > 1 and number else stem
    if len(set(names.values())) != len(names):  # same description and number: fall back to the UID tail
        names = {uid: f"{name}_{uid[-8:]}" for uid, name in names.items()}
    return names


@dataclass(frozen=True)
class VolumePlan:
    """One volume to write (``error`` is ``None``), or a series refused from its headers alone."""

    description: str
    records: list[SliceRecord]
    output: Path
    error: str | None = None


def plan_volumes(scan: FolderScan, out_dir: Path) -> list[VolumePlan]:
    """Check each series' headers and split repeated slice positions; one plan per output volume."""
    names = _output_names(scan.described)
    plans, used = [], set()
    for uid, records in scan.series.items():
        description = _describe(scan.described[uid])
        try:
            check_series(records)
            parts = split_repeats(records)
        except DataError as exc:
            plans.append(VolumePlan(description, records, out_dir / f"{names[uid]}.nii.gz", str(exc)))
            continue
        for suffix, part in parts:
            label = f"{description} [{suffix[1:]}]" if suffix else description
            stem = names[uid] + suffix
            stem = f"{stem}_{uid[-8:]}" if stem in used else stem  # e.g. series "T2" echo 1 and a series "T2_echo1"
            used.add(stem)
            plans.append(VolumePlan(label, part, out_dir / f"{stem}.nii.gz"))
    return sorted(plans, key=lambda plan: plan.output.name)


def _decode_failure(ds: pydicom.Dataset, exc: Exception) -> str:
    """Why the pixel data of ``ds`` could not be decoded, in words (without the decoder plugins' internals)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        what = "no transfer syntax"
    else:
        what = f"transfer syntax {syntax.name}" + (f" ({syntax})" if syntax.name != str(syntax) else "")
    if "less than expected" in str(exc):
        cause = "there are fewer pixel bytes than Rows x Columns x BitsAllocated need (a truncated file?)"
    elif isinstance(exc, NotImplementedError):
        cause = "no decoder for this transfer syntax; export the series uncompressed"
    elif isinstance(exc, RuntimeError):
        cause = "corrupt compressed data, or no decoder installed for it; export the series uncompressed"
    else:
        cause = str(exc)[:200]
    return f"pixel data cannot be decoded ({what}): {cause}"


def _read_slice(record: SliceRecord, path: Path) -> tuple[SliceRecord, pydicom.Dataset]:
    """Read one file with its pixels, decode them, and note their digest (to find exact duplicates)."""
    try:
        ds = pydicom.dcmread(path)
    except _READ_ERRORS as exc:
        cause = f"unreadable DICOM file (truncated or corrupt?): {str(exc)[:200]}"
        raise DataError(f"{record.name}: {cause}", "dicom_invalid") from None
    try:
        pixels = ds.pixel_array  # cached on ds: dicom2nifti does not decode again
    except _READ_ERRORS as exc:
        raise DataError(f"{record.name}: {_decode_failure(ds, exc)}", "dicom_invalid") from None
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode() + pixels.tobytes()).hexdigest()
    return replace(record, pixels=digest), ds


def convert_series(datasets: list[pydicom.Dataset], output: Path) -> tuple[int, ...]:
    """Convert one checked volume with dicom2nifti (original orientation kept); returns the written shape.

    Raises:
        DataError: dicom2nifti refused the slices.
    """
    try:
        result = convert_dicom.dicom_array_to_nifti(datasets, str(output), reorient_nifti=False)
    except (ConversionValidationError, ConversionError) as exc:
        code = str(exc.args[0]) if exc.args else "INVALID"
        raise DataError(_REASONS.get(code, f"cannot convert: {code}"), "dicom_invalid") from None
    except (ValueError, KeyError, AttributeError, IndexError, TypeError, NotImplementedError) as exc:
        raise DataError(f"cannot convert: {type(exc).__name__}: {exc}", "dicom_invalid") from None
    return tuple(int(n) for n in result["NII"].shape)


def convert_volume(plan: VolumePlan, paths: dict[str, Path]) -> SeriesResult:
    """Read, de-duplicate, check the spacing of and convert one planned volume; never leaves a partial file."""
    if plan.error is not None:
        return SeriesResult(plan.description, len(plan.records), error=plan.error)
    n_files, duplicates = len(plan.records), 0
    try:
        read = [_read_slice(record, paths[record.name]) for record in plan.records]
        records, duplicates = drop_duplicates([record for record, _ in read])
        n_files = len(records)
        check_spacing(records)
        datasets = {record.name: ds for record, ds in read}
        ordered = [datasets[record.name] for _, record in slice_offsets(records)]
        for number, ds in enumerate(ordered, start=1):
            ds.InstanceNumber = number  # in memory only: dicom2nifti stacks slices in InstanceNumber order
        shape = convert_series(ordered, plan.output)
        if len(shape) != 3 or shape[2] != n_files:
            raise DataError(f"conversion gave a volume of shape {shape} from {n_files} slices", "dicom_invalid")
    except DataError as exc:
        plan.output.unlink(missing_ok=True)
        return SeriesResult(plan.description, n_files, error=str(exc), duplicates=duplicates)
    return SeriesResult(plan.description, n_files, output=plan.output, duplicates=duplicates)


def convert_directory(
    dicom_dir: Path, out_dir: Path, on_series: Callable[[SeriesResult], None] | None = None
) -> ConversionReport:
    """Convert every series under ``dicom_dir`` into ``out_dir/<description>[_echoN].nii.gz``.

    Refused series and unreadable files are reported in the results (``on_series`` sees each as it is done);
    the rules are in the module docstring.

    Raises:
        DataError: ``dicom_dir`` is not a folder, holds no DICOM image, or an output file already exists.
    """
    dicom_dir, out_dir = Path(dicom_dir), Path(out_dir)
    if not dicom_dir.is_dir():
        raise DataError(f"DICOM folder not found: {dicom_dir}", "missing_file")
    with _quiet():
        return _convert_all(dicom_dir, out_dir, on_series)


def _convert_all(dicom_dir: Path, out_dir: Path, on_series: Callable[[SeriesResult], None] | None) -> ConversionReport:
    """The body of :func:`convert_directory` (with pydicom and dicom2nifti quiet)."""
    scan = scan_folder(dicom_dir)
    if not scan.series and not scan.broken:
        skipped = ConversionReport([], scan.not_dicom, scan.not_images).skipped() or "the folder is empty"
        raise DataError(f"no DICOM image files found in {dicom_dir} ({skipped})", "no_cases")
    plans = plan_volumes(scan, out_dir)
    existing = [str(p.output) for p in plans if p.error is None and p.output.exists()]
    if existing:
        raise DataError(f"output file already exists (not overwriting): {existing[0]}", "exists")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for result in scan.broken:
        results.append(result)
        if on_series is not None:
            on_series(result)
    for plan in plans:
        result = convert_volume(plan, scan.paths)
        results.append(result)
        if on_series is not None:
            on_series(result)
    return ConversionReport(results, scan.not_dicom, scan.not_images)
