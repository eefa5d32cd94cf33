"""What ``endofed data convert`` did: one result per volume (or unreadable file), and the lines it prints.

Pure: the counts and the wording of the summary line and of the one error line (tests/data/test_dicom.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeriesResult:
    """Outcome of converting one volume (a series, or one echo of a series), or of one unreadable file.

    Attributes:
        description: the series description (or ``series_<number>``), plus e.g. `` [echo1]`` for a part of a
            split series; for an unreadable file, its path relative to the DICOM folder.
        n_files: number of DICOM files used (after dropping duplicates).
        output: the NIfTI written, or ``None`` when it failed.
        error: the reason it failed, else ``None``.
        duplicates: exact duplicate files dropped.
        series: ``False`` for a file that belongs to no readable series.
    """

    description: str
    n_files: int
    output: Path | None = None
    error: str | None = None
    duplicates: int = 0
    series: bool = True

    @property
    def label(self) -> str:
        """``series 'T2 TSE'`` or ``file 'a/IM1.dcm'``, for messages."""
        return f"{'series' if self.series else 'file'} {self.description!r}"


def _plural(count: int, noun: str) -> str:
    """``(1, "file") -> "1 file"``, ``(2, "file") -> "2 files"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class ConversionReport:
    """Everything ``convert_directory`` did: one result per volume or unreadable file, and the files skipped."""

    results: list[SeriesResult]
    not_dicom: int = 0
    not_images: int = 0

    @property
    def failed(self) -> list[SeriesResult]:
        """The results that were refused."""
        return [r for r in self.results if r.error is not None]

    def summary(self) -> str:
        """One line: ``"2 volumes converted, 1 refused; 1 duplicate file dropped; 3 non-DICOM files skipped"``."""
        converted = len(self.results) - len(self.failed)
        parts = [f"{_plural(converted, 'volume')} converted, {len(self.failed)} refused"]
        duplicates = sum(r.duplicates for r in self.results)
        if duplicates:
            parts.append(f"{_plural(duplicates, 'duplicate file')} dropped")
        if self.skipped():
            parts.append(self.skipped())
        return "; ".join(parts)

    def skipped(self) -> str:
        """``"1 non-DICOM file and 2 DICOM files without an image skipped"``, or ``""`` when none were."""
        kinds = [
            _plural(self.not_dicom, "non-DICOM file") if self.not_dicom else "",
            f"{_plural(self.not_images, 'DICOM file')} without an image" if self.not_images else "",
        ]
        kept = [kind for kind in kinds if kind]
        return f"{' and '.join(kept)} skipped" if kept else ""

    def failure_line(self) -> str | None:
        """The one error line when something was refused (the first cause, the rest listed above), else ``None``."""
        failed = self.failed
        if not failed:
            return None
        first = f"{failed[0].label} not converted: {failed[0].error}"
        return first if len(failed) == 1 else f"{len(failed)} volumes or files not converted (listed above); {first}"
