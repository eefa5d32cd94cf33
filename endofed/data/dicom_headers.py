"""One DICOM file's header -> :class:`~endofed.data.dicom_series.SliceRecord` (``endofed data convert``).

Header values come from scanners, anonymisers and hand edits: a value may be absent, empty, not a number, or
the wrong count. Absent values become ``None`` (``check_series`` refuses them where they are needed); a value
that is present but unusable becomes the record's ``problem``, which names the tag and the value.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.uid import UID

from endofed.data.dicom_series import SliceRecord


class _Malformed(ValueError):
    """A header value that is present but unusable (its message says which and why)."""


def _values(header: pydicom.Dataset, keyword: str) -> list[object] | None:
    """The value(s) of ``keyword`` as a list; ``None`` when absent or empty.

    Raises:
        _Malformed: the stored value cannot be converted to its VR's type.
    """
    if keyword not in header:
        return None
    try:
        value = header[keyword].value  # raw values are converted here: "abc" in a DS raises
    except (ValueError, TypeError, OverflowError) as exc:
        raise _Malformed(f"{keyword} cannot be read ({str(exc)[:80]})") from None
    if value is None or value == "" or (isinstance(value, (MultiValue, list, tuple)) and len(value) == 0):
        return None
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def _floats(header: pydicom.Dataset, keyword: str, count: int | None = None) -> tuple[float, ...] | None:
    """``keyword`` as finite floats (exactly ``count`` of them if given); ``None`` when absent.

    Raises:
        _Malformed: not numbers, not finite, or the wrong count.
    """
    values = _values(header, keyword)
    if values is None:
        return None
    try:
        numbers = tuple(float(str(v)) for v in values)
    except ValueError:
        numbers = ()
    if not numbers or not all(math.isfinite(v) for v in numbers) or (count is not None and len(numbers) != count):
        expected = f"{count} numbers" if count else "a number"
        raise _Malformed(f"{keyword} is {shorten_value(values)}, expected {expected}")
    return numbers


def _number(header: pydicom.Dataset, keyword: str) -> float | None:
    """The first value of ``keyword`` as a float (EchoNumbers may hold several), ``None`` when absent."""
    numbers = _floats(header, keyword)
    return None if numbers is None else numbers[0]


def _integer(header: pydicom.Dataset, keyword: str) -> int | None:
    """The first value of ``keyword`` as an int, ``None`` when absent."""
    number = _number(header, keyword)
    return None if number is None else int(number)


def shorten_value(values: list[object], limit: int = 60) -> str:
    """A header value for a message, cut at ``limit`` characters."""
    text = str(values if len(values) != 1 else values[0])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text_value(header: pydicom.Dataset, keyword: str) -> str:
    """``keyword`` as stripped text; ``""`` when absent, empty or unreadable (for names, not for geometry)."""
    try:
        value = header.get(keyword)
    except (ValueError, TypeError, OverflowError):
        return ""
    return "" if value is None else str(value).strip()


def sop_class(header: pydicom.Dataset) -> UID | None:
    """The SOP class of a file: SOPClassUID, else the file meta's MediaStorageSOPClassUID."""
    meta = getattr(header, "file_meta", None)
    value = text_value(header, "SOPClassUID") or (text_value(meta, "MediaStorageSOPClassUID") if meta else "")
    return UID(value) if value else None


def _geometry(header: pydicom.Dataset) -> tuple[tuple[float, ...] | None, ...]:
    """``(position, orientation, spacing)`` of a header, each ``None`` when absent.

    Raises:
        _Malformed: a value that cannot describe a slice (orientation not two unit vectors at right angles,
            spacing not positive).
    """
    position = _floats(header, "ImagePositionPatient", 3)
    orientation = _floats(header, "ImageOrientationPatient", 6)
    spacing = _floats(header, "PixelSpacing", 2)
    if orientation is not None:
        row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        if not (abs(np.linalg.norm(row) - 1) < 0.01 and abs(np.linalg.norm(col) - 1) < 0.01 and abs(row @ col) < 0.01):
            raise _Malformed(f"ImageOrientationPatient {list(orientation)} is not two perpendicular unit vectors")
    if spacing is not None and min(spacing) <= 0:
        raise _Malformed(f"PixelSpacing {list(spacing)} is not positive")
    return position, orientation, spacing


def record_from_header(name: str, header: pydicom.Dataset) -> SliceRecord:
    """The :class:`SliceRecord` of one image file's header (read with or without its pixel data).

    A missing value becomes ``None`` (refused later by :func:`check_series` if it is needed); a malformed one
    becomes the record's ``problem``.
    """
    klass = sop_class(header)
    sop_uid = text_value(header, "SOPInstanceUID") or name
    try:
        position, orientation, spacing = _geometry(header)
        return SliceRecord(
            name=name,
            sop_uid=sop_uid,
            modality=text_value(header, "Modality"),
            rows=_integer(header, "Rows"),
            columns=_integer(header, "Columns"),
            position=position,
            orientation=orientation,
            spacing=spacing,
            echo_number=_integer(header, "EchoNumbers"),
            echo_time=_number(header, "EchoTime"),
            acquisition=_integer(header, "AcquisitionNumber"),
            temporal=_integer(header, "TemporalPositionIdentifier"),
            samples=_integer(header, "SamplesPerPixel") or 1,
            frames=_integer(header, "NumberOfFrames") or 1,
            enhanced=klass is not None and ("Enhanced" in klass.name or "Legacy Converted" in klass.name),
            has_pixels="PixelData" in header,
        )
    except _Malformed as exc:
        return SliceRecord(name=name, sop_uid=sop_uid, problem=str(exc))
