"""What a DICOM series must look like before it is converted to one NIfTI volume: pure checks on slice headers.

dicom2nifti (``endofed.data.dicom``) sorts slices and builds the affine, but it takes what it is given: files
without pixel data, repeated slice positions with identical pixels and off-orientation slices are dropped
without a word, and repeated positions otherwise become a 4D volume. So before conversion a series is reduced
to :class:`SliceRecord` s (header values only) and checked here, and every problem is a ``DataError`` whose
message names a file:

- one slice per file, greyscale, with pixel data, ImagePositionPatient, ImageOrientationPatient and
  PixelSpacing; enhanced (multi-frame) files and colour images are refused;
- one modality, image size, orientation and pixel spacing per series;
- slice positions that repeat (a dual-echo sequence stored as one series) are split by echo (EchoNumbers, then
  EchoTime), then AcquisitionNumber, then TemporalPositionIdentifier into separate volumes (:func:`split_repeats`);
  exact duplicates (same position, identical pixels) are dropped and counted (:func:`drop_duplicates`); any
  repeat left is refused;
- slices are evenly spaced (:func:`check_spacing`): a missing slice is refused, never written as a volume whose
  slices after the gap sit in the wrong place, and never filled in by resampling. Re-export the full series.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from endofed.errors import DataError

POSITION_DECIMALS = 2  # positions closer than 0.01 mm are the same slice position


@dataclass(frozen=True)
class SliceRecord:
    """The header values of one DICOM image file that decide how (and whether) it joins a volume.

    Attributes:
        name: the file, as shown to the user (path relative to the DICOM folder).
        sop_uid: SOPInstanceUID (the file name when absent).
        modality: e.g. ``"MR"``.
        rows, columns: image size, ``None`` when absent.
        position: ImagePositionPatient (mm, LPS), ``None`` when absent.
        orientation: ImageOrientationPatient (row then column direction cosines), ``None`` when absent.
        spacing: PixelSpacing (mm), ``None`` when absent.
        echo_number, echo_time, acquisition, temporal: EchoNumbers, EchoTime, AcquisitionNumber and
            TemporalPositionIdentifier, ``None`` when absent: what tells repeated slice positions apart.
        samples: SamplesPerPixel (3 for colour).
        frames: NumberOfFrames (more than 1 in an enhanced multi-frame file).
        enhanced: the SOP class is an enhanced (multi-frame) image storage.
        has_pixels: the file has pixel data.
        problem: what makes the header unusable (a malformed value), else ``None``.
        pixels: digest of the decoded pixels once read, else ``None``.
    """

    name: str
    sop_uid: str
    modality: str = ""
    rows: int | None = None
    columns: int | None = None
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    spacing: tuple[float, ...] | None = None
    echo_number: int | None = None
    echo_time: float | None = None
    acquisition: int | None = None
    temporal: int | None = None
    samples: int = 1
    frames: int = 1
    enhanced: bool = False
    has_pixels: bool = True
    problem: str | None = None
    pixels: str | None = None


def _first(records: Sequence[SliceRecord], failing: Callable[[SliceRecord], bool]) -> SliceRecord | None:
    """The first record for which ``failing`` is true, else ``None``."""
    return next((r for r in records if failing(r)), None)


def _refuse_first(records: Sequence[SliceRecord], failing: Callable[[SliceRecord], bool], cause: str) -> None:
    """Raise ``DataError("<file> <cause>")`` for the first failing record (``cause`` may use ``{r}``)."""
    bad = _first(records, failing)
    if bad is not None:
        others = sum(1 for r in records if failing(r)) - 1
        more = f" (and {others} more {'file' if others == 1 else 'files'})" if others else ""
        raise DataError(f"{bad.name}{more}: {cause.format(r=bad)}", "dicom_invalid")


def _refuse_mixed(records: Sequence[SliceRecord], what: str, value: Callable[[SliceRecord], object]) -> None:
    """Refuse a series in which ``value`` differs between files, naming one file of the two commonest values."""
    groups: dict[object, list[SliceRecord]] = defaultdict(list)
    for record in records:
        groups[value(record)].append(record)
    if len(groups) > 1:
        (a, first), (b, second) = sorted(groups.items(), key=lambda item: -len(item[1]))[:2]
        raise DataError(
            f"the series mixes {what}: {a} ({_files(len(first))}, e.g. {first[0].name}) and "
            f"{b} ({_files(len(second))}, e.g. {second[0].name})",
            "dicom_invalid",
        )


def _files(count: int) -> str:
    """``1 -> "1 file"``, ``7 -> "7 files"``."""
    return f"{count} file{'' if count == 1 else 's'}"


def _pair(first: SliceRecord, second: SliceRecord) -> str:
    """``"A and B"``, in file-name order (which usually follows the scanner's numbering)."""
    return " and ".join(sorted((first.name, second.name)))


def _rounded(values: tuple[float, ...] | None, decimals: int) -> str:
    """``(0.0, 1.00001, -0.0)`` -> ``"[0, 1, 0]"`` (for grouping and messages)."""
    return "[" + ", ".join(f"{round(v, decimals) + 0.0:g}" for v in values or ()) + "]"


def check_series(records: Sequence[SliceRecord]) -> None:
    """Refuse a series that cannot be one or more volumes of single-frame greyscale slices.

    Raises:
        DataError: naming the first offending file and the cause (see the module docstring for the rules).
    """
    _refuse_first(records, lambda r: r.problem is not None, "{r.problem}")
    _refuse_first(
        records,
        lambda r: r.enhanced or r.frames > 1,
        "enhanced multi-frame DICOM ({r.frames} frame(s) in one file) is not supported; "
        "export the series as classic single-frame images (one file per slice)",
    )
    _refuse_first(
        records,
        lambda r: r.samples != 1,
        "colour image (SamplesPerPixel {r.samples}) refused: only greyscale MR/CT slices can be converted",
    )
    _refuse_first(
        records, lambda r: r.rows is None or r.columns is None, "has no Rows/Columns (an incomplete or truncated file?)"
    )
    _refuse_first(records, lambda r: not r.has_pixels, "has no pixel data (a truncated file or a broken export?)")
    geometry = "(needed for the volume geometry)"
    _refuse_first(records, lambda r: r.position is None, f"has no ImagePositionPatient {geometry}")
    _refuse_first(records, lambda r: r.orientation is None, f"has no ImageOrientationPatient {geometry}")
    _refuse_first(records, lambda r: r.spacing is None, f"has no PixelSpacing {geometry}")
    _refuse_mixed(records, "modalities", lambda r: r.modality or "(none)")
    _refuse_mixed(records, "image sizes (Rows x Columns)", lambda r: f"{r.rows} x {r.columns}")
    _refuse_mixed(records, "orientations (ImageOrientationPatient)", lambda r: _rounded(r.orientation, 3))
    _refuse_mixed(records, "pixel spacings (PixelSpacing, mm)", lambda r: _rounded(r.spacing, 4))


def position_key(record: SliceRecord) -> tuple[float, ...]:
    """The slice position rounded to 0.01 mm, so that repeats compare equal."""
    assert record.position is not None  # check_series ran first
    return tuple(round(v, POSITION_DECIMALS) + 0.0 for v in record.position)


def repeat_count(records: Sequence[SliceRecord]) -> int:
    """How many files share the commonest slice position (1: every position is unique; 0: no files)."""
    return max(Counter(position_key(r) for r in records).values(), default=0)


SplitKey = tuple[str, Callable[[SliceRecord], "float | int | None"], bool]  # (label prefix, value, label by value?)

# What tells repeated slice positions apart, in the order tried.
SPLIT_KEYS: tuple[SplitKey, ...] = (
    ("echo", lambda r: r.echo_number, True),
    ("echo", lambda r: r.echo_time, False),  # echo times are labelled by rank: shortest TE is echo1
    ("acq", lambda r: r.acquisition, True),
    ("t", lambda r: r.temporal, True),
)


def _labels(values: set[float | int | None], prefix: str, by_value: bool) -> dict[float | int | None, str]:
    """Suffix per value, in value order: ``_echo2`` for EchoNumbers 2, or the rank (1-based, ``None`` last)."""
    ordered = sorted(values, key=lambda v: (v is None, v if v is not None else 0))
    if by_value and None not in values:
        return {v: f"_{prefix}{v:g}" for v in ordered if v is not None}
    return {v: f"_{prefix}{rank}" for rank, v in enumerate(ordered, start=1)}


def split_repeats(
    records: Sequence[SliceRecord], keys: Sequence[SplitKey] = SPLIT_KEYS
) -> list[tuple[str, list[SliceRecord]]]:
    """Split a series whose slice positions repeat into volumes, each with its name suffix.

    The first key of ``SPLIT_KEYS`` (default) that explains the repeats is used: it must take at least two
    values, and no more values than the commonest position has files (a dual echo repeats each position
    twice and has two echoes; a per-slice AcquisitionNumber explains nothing). Each part is split again by
    the remaining keys while its positions still repeat. Repeats that no key explains stay in their part
    (duplicates, or a refusal in :func:`check_spacing`).

    Returns:
        ``[(suffix, records)]``, e.g. ``[("", all)]`` or ``[("_echo1", ...), ("_echo2", ...)]``, in value order.
    """
    repeats = repeat_count(records)
    for index, (prefix, value, by_value) in enumerate(keys if repeats > 1 else ()):
        groups: dict[float | int | None, list[SliceRecord]] = defaultdict(list)
        for record in records:
            groups[value(record)].append(record)
        if not 2 <= len(groups) <= repeats:
            continue
        labels = _labels(set(groups), prefix, by_value)
        parts: list[tuple[str, list[SliceRecord]]] = []
        for key, label in labels.items():  # in value order (None last)
            parts.extend((label + suffix, part) for suffix, part in split_repeats(groups[key], keys[index + 1 :]))
        return parts
    return [("", list(records))]


def drop_duplicates(records: Sequence[SliceRecord]) -> tuple[list[SliceRecord], int]:
    """Drop exact duplicates: files at the same position with identical decoded pixels (keeps the first).

    Raises:
        DataError: two files share a SOPInstanceUID but are not duplicates (a corrupt export).

    Returns:
        ``(records kept, number dropped)``.
    """
    kept: list[SliceRecord] = []
    seen: dict[tuple[object, ...], SliceRecord] = {}
    by_uid: dict[str, SliceRecord] = {}
    for record in records:
        key = (position_key(record), record.pixels)
        if record.pixels is not None and key in seen:
            continue
        if record.sop_uid in by_uid:
            raise DataError(
                f"{by_uid[record.sop_uid].name} and {record.name} have the same SOPInstanceUID but different "
                "positions or pixels (a corrupt export)",
                "dicom_invalid",
            )
        seen[key], by_uid[record.sop_uid] = record, record
        kept.append(record)
    return kept, len(records) - len(kept)


def slice_offsets(records: Sequence[SliceRecord]) -> list[tuple[float, SliceRecord]]:
    """Each slice's position along the slice normal (row x column direction), in mm, sorted ascending."""
    orientation = np.asarray(records[0].orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    offsets = [(float(np.dot(np.asarray(r.position, dtype=float), normal)), r) for r in records]
    return sorted(offsets, key=lambda item: item[0])


def typical_step(steps: Sequence[float]) -> float:
    """The slice spacing of a series: the commonest step (to 0.1 mm), the smallest on a tie; 0 when none."""
    if not steps:
        return 0.0
    counts = Counter(round(s, 1) for s in steps)
    best = max(counts.values())
    return min(s for s in counts if counts[s] == best)


def check_spacing(records: Sequence[SliceRecord]) -> None:
    """Refuse a volume whose slices repeat a position or are not evenly spaced along the slice normal.

    Tolerance: a step may differ from the typical step by 0.1 mm + 5% (as dicom2nifti's own check).

    Raises:
        DataError: naming the two files around the repeat or the gap.
    """
    offsets = slice_offsets(records)
    pairs = [(b - a, first, second) for (a, first), (b, second) in zip(offsets[:-1], offsets[1:], strict=True)]
    for step, first, second in pairs:
        if step < 10**-POSITION_DECIMALS:
            raise DataError(
                f"{_pair(first, second)} are at the same slice position with different pixels, and no "
                "EchoNumbers, EchoTime, AcquisitionNumber or TemporalPositionIdentifier tells them apart",
                "dicom_invalid",
            )
    expected = typical_step([step for step, _, _ in pairs])
    for step, first, second in pairs:
        if abs(step - expected) > 0.1 + 0.05 * expected:
            hint = "a missing slice?" if step > expected else "an extra slice?"
            raise DataError(
                f"slice positions are not evenly spaced: {step:.2f} mm between {_pair(first, second)}, "
                f"{expected:.2f} mm elsewhere ({hint}); refused rather than written with misplaced slices",
                "dicom_invalid",
            )
