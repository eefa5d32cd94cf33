"""The one writer of a synthetic site folder, shared by ``endofed synth`` and ``endofed data example``.

A site folder is what a hospital would hand to ``endofed data check``::

    <root>/data/<subject>/{T1,T2}.nii.gz   int16 (or float) images, scanner-based sform and qform
    <root>/manifest.csv                    subject_id,t1,t2,label (paths relative to <root>; blank = unlabelled)
    <site yaml>                            site_id, data_root, manifest, work_dir (<root>/work), device

The site YAML may sit inside ``<root>`` or next to it; its paths are written relative to its own folder,
which is how :func:`endofed.config.load_site_config` resolves them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml

MODALITIES = ("T1", "T2")
MANIFEST_COLUMNS = ("subject_id", "t1", "t2", "label")
MANIFEST_FILE = "manifest.csv"
DATA_DIR, WORK_DIR = "data", "work"


def image_file(subject_id: str, modality: str) -> str:
    """Path of a subject's image relative to the site root, as the manifest names it."""
    return f"{DATA_DIR}/{subject_id}/{modality}.nii.gz"


def save_nifti(image: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a NIfTI-1 image with the same scanner-based sform and qform (code 1); folders are created."""
    nifti = nib.Nifti1Image(image, affine)
    nifti.set_sform(affine, code=1)
    nifti.set_qform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nifti, path)


def save_subject(root: Path, subject_id: str, images: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``{modality: (image, affine)}`` of one subject under ``<root>/data/<subject>/``."""
    for modality, (image, affine) in images.items():
        save_nifti(image, affine, root / image_file(subject_id, modality))


def manifest_row(subject_id: str, label: int | None, split: str | None = None) -> list[str]:
    """One manifest row: subject, T1 and T2 files, label (``None`` = unlabelled, blank)[, fixed split].

    ``split`` (``train`` / ``test``), when given, fixes that subject's split in the manifest.
    """
    row = [subject_id, image_file(subject_id, "T1"), image_file(subject_id, "T2"), "" if label is None else str(label)]
    return row if split is None else [*row, split]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV file with a header (folders are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_manifest_and_yaml(
    root: Path, site_yaml: Path, site_id: str, rows: Sequence[Sequence[str]], device: str
) -> Path:
    """Write the manifest of a site whose images are saved, and its site YAML.

    Args:
        root: the site folder (holds ``data/``; gets ``manifest.csv``; its ``work/`` is the work dir).
        site_yaml: where the site YAML goes (inside ``root`` or beside it).
        site_id: the site's name.
        rows: :func:`manifest_row` of every subject, in manifest order (all with a split, or none).
        device: the site's ``device`` setting (``cpu``, ``auto`` ...).

    Returns:
        ``site_yaml``.
    """
    with_split = any(len(row) > len(MANIFEST_COLUMNS) for row in rows)
    write_csv(root / MANIFEST_FILE, [*MANIFEST_COLUMNS, "split"] if with_split else MANIFEST_COLUMNS, rows)
    base = Path(os.path.relpath(root, site_yaml.parent))
    config = {
        "site_id": site_id,
        "data_root": (base / DATA_DIR).as_posix(),
        "manifest": (base / MANIFEST_FILE).as_posix(),
        "work_dir": (base / WORK_DIR).as_posix(),
        "device": device,
    }
    site_yaml.parent.mkdir(parents=True, exist_ok=True)
    site_yaml.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return site_yaml
