"""A site's list of cases: from a CSV manifest or by discovering ``<subject>/`` folders.

CSV columns: ``subject_id,t1,t2,label[,split]``. Paths are relative to the manifest's folder; a blank
``t1``/``t2`` means that modality is missing; a blank label means unlabelled (usable for pre-training only);
``split`` (optional) is one of train/val/test and fixes that subject's split.

File existence is *not* checked here: a missing file is a per-case failure that ``endofed data check``
reports with the others.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from endofed.config import SPLITS, SiteConfig
from endofed.errors import DataError
from endofed.io.files import special_file

MODALITIES = ("t1", "t2")  # the image fields of a Case, in channel order (0 = T1, 1 = T2)
REQUIRED_COLUMNS = ("subject_id", "t1", "t2", "label")
OPTIONAL_COLUMNS = ("split",)


@dataclass(frozen=True)
class Case:
    """One subject (patient) of a site.

    Attributes:
        subject_id: site-local identifier; never leaves the site.
        t1: path of the T1 volume, or ``None`` when missing.
        t2: path of the T2 volume, or ``None`` when missing.
        label: 1 (endometriosis), 0 (none) or ``None`` (unlabelled).
        split: ``"train"``, ``"val"``, ``"test"`` when fixed by the manifest, else ``None``.
    """

    subject_id: str
    t1: Path | None
    t2: Path | None
    label: int | None = None
    split: str | None = None


def parse_label(text: str, where: str) -> int | None:
    """Parse a label cell: ``"0"``, ``"1"`` or blank (unlabelled); anything else is an error."""
    text = text.strip()
    if text == "":
        return None
    if text in ("0", "1"):
        return int(text)
    raise DataError(f"label must be 0, 1 or blank, got {text!r} at {where}", "bad_label")


def check_unique_ids(cases: list[Case], source: Path) -> None:
    """Refuse duplicate subject ids (a subject must never land in two splits)."""
    seen: set[str] = set()
    for case in cases:
        if case.subject_id in seen:
            raise DataError(f"duplicate subject_id {case.subject_id!r} in {source}", "duplicate_subject")
        seen.add(case.subject_id)


def _cell_path(cell: str, base: Path) -> Path | None:
    """A manifest path cell, resolved against the manifest folder; blank = missing modality."""
    cell = cell.strip()
    return (base / cell).resolve() if cell else None


def read_manifest(path: Path) -> list[Case]:
    """Read a CSV manifest into cases (see the module docstring for the format).

    Raises:
        DataError: missing file, malformed CSV, missing columns, bad label or split, duplicate subject ids.
    """
    path = Path(path)
    if special_file(path):
        raise DataError(f"manifest {path} is not a regular file (a folder, FIFO or device)", "bad_manifest")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, strict=True))
    except FileNotFoundError:
        raise DataError(f"missing manifest: {path}", "missing_file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"malformed CSV manifest {path}: {exc}", "bad_manifest") from None
    if not rows:
        raise DataError(f"empty manifest: {path}", "bad_manifest")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        raise DataError(
            f"malformed CSV manifest {path}: header must be {','.join(REQUIRED_COLUMNS)}[,split], got "
            f"{','.join(header)!r}",
            "bad_manifest",
        )
    base = path.resolve().parent
    cases = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        where = f"{path}:{line_no}"
        if len(row) != len(header):
            raise DataError(
                f"malformed CSV manifest: {where} has {len(row)} fields, expected {len(header)}",
                "bad_manifest",
            )
        cells = dict(zip(header, row, strict=True))
        subject = cells["subject_id"].strip()
        if not subject:
            raise DataError(f"empty subject_id at {where}", "bad_manifest")
        split = cells.get("split", "").strip() or None
        if split is not None and split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS} or blank, got {split!r} at {where}", "bad_manifest")
        t1, t2 = _cell_path(cells["t1"], base), _cell_path(cells["t2"], base)
        if t1 is None and t2 is None:
            raise DataError(f"subject {subject!r} has neither t1 nor t2 at {where}", "missing_modality")
        cases.append(Case(subject, t1, t2, parse_label(cells["label"], where), split))
    check_unique_ids(cases, path)
    return cases


def read_labels(path: Path) -> dict[str, int | None]:
    """Read a ``subject_id,label`` CSV (folder discovery's optional labels file)."""
    if special_file(Path(path)):
        raise DataError(f"labels file {path} is not a regular file (a folder, FIFO or device)", "bad_manifest")
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, strict=True))
    except FileNotFoundError:
        raise DataError(f"missing labels file: {path}", "missing_file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"malformed labels CSV {path}: {exc}", "bad_manifest") from None
    if rows and not {"subject_id", "label"} <= set(rows[0]):
        raise DataError(f"malformed labels CSV {path}: header must be subject_id,label", "bad_manifest")
    labels: dict[str, int | None] = {}
    for line_no, row in enumerate(rows, start=2):
        subject = (row.get("subject_id") or "").strip()
        if subject in labels:
            raise DataError(f"duplicate subject_id {subject!r} in {path}", "duplicate_subject")
        labels[subject] = parse_label(row.get("label") or "", f"{path}:{line_no}")
    return labels


def _match_one(folder: Path, pattern: str) -> Path | None:
    """The single file in ``folder`` matching ``pattern``; ``None`` if none; error if several."""
    matches = sorted(p for p in folder.glob(pattern) if p.is_file())
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise DataError(f"pattern {pattern!r} matches several files in {folder}: {names}", "ambiguous")
    return matches[0] if matches else None


def discover_cases(root: Path, t1_glob: str, t2_glob: str, labels_csv: Path | None = None) -> list[Case]:
    """Find ``<root>/<subject>/`` folders and their T1/T2 files by glob patterns.

    Raises:
        DataError: the root is missing, a pattern matches several files in one folder, or no case is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root is not a folder: {root}", "missing_file")
    labels = read_labels(labels_csv) if labels_csv is not None else {}
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        t1, t2 = _match_one(folder, t1_glob), _match_one(folder, t2_glob)
        if t1 is not None and t1 == t2:
            raise DataError(f"T1 and T2 patterns match the same file {t1}", "ambiguous")
        if t1 is None and t2 is None:
            continue
        cases.append(Case(folder.name, t1, t2, labels.get(folder.name)))
    if not cases:
        raise DataError(f"no case folders with files matching {t1_glob!r} or {t2_glob!r} in {root}", "no_cases")
    return cases


def load_cases(site: SiteConfig) -> list[Case]:
    """The site's cases: from its manifest when set, otherwise by folder discovery under ``data_root``."""
    if site.manifest is not None:
        return read_manifest(site.manifest)
    return discover_cases(site.data_root, site.t1_glob, site.t2_glob, site.labels_csv)
