"""Preprocessing cache in the site's work dir, keyed by source-file content hashes + preprocessing config.

Layout: ``<work_dir>/cache/<key[:2]>/<key>/{image.npy, mask.npy, meta.json}``. Entries are written to a
temporary folder and renamed into place, so an interrupted run never leaves a half-written entry. Reads
are memory-mapped (``np.load(mmap_mode="r")``): an epoch never touches NIfTI. Changing a source file's
bytes or any preprocessing setting changes the key, so the case is preprocessed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endofed.config import DataConfig, to_dict
from endofed.io.hashing import file_sha256

# Bump when the preprocessing code changes what it produces for the same inputs and config.
PREPROCESS_VERSION = 1


def file_digest(path: Path) -> str:
    """SHA-256 of a source file's bytes (opened read-only): the content part of a cache key."""
    return file_sha256(path)


def config_digest(cfg: DataConfig) -> str:
    """SHA-256 of the preprocessing config and code version (stable across runs and machines)."""
    text = json.dumps({"version": PREPROCESS_VERSION, "data": to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(t1_digest: str | None, t2_digest: str | None, cfg: DataConfig) -> str:
    """Key of one preprocessed case: its source digests (``None`` = missing modality) + the config."""
    text = json.dumps({"t1": t1_digest, "t2": t2_digest, "config": config_digest(cfg)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedCase:
    """A cache entry, memory-mapped read-only.

    Attributes:
        image: ``(2, X, Y, Z)`` normalised volumes (float32 or float16).
        mask: ``(2, X, Y, Z)`` uint8 validity masks.
        meta: small JSON metadata (affine, source facts) written with the entry.
    """

    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any]


class VolumeCache:
    """Content-addressed store of preprocessed cases under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Folder of the entry ``key``."""
        return self.root / key[:2] / key

    def contains(self, key: str) -> bool:
        """Whether a complete entry exists."""
        return (self.path(key) / "meta.json").is_file()

    def put(self, key: str, image: np.ndarray, mask: np.ndarray, meta: dict[str, Any]) -> Path:
        """Write an entry atomically (temporary folder, then rename). Existing entries are kept."""
        final = self.path(key)
        if self.contains(key):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        try:
            np.save(tmp / "image.npy", image)
            np.save(tmp / "mask.npy", mask.astype(np.uint8, copy=False))
            (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
            os.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.contains(key):  # a concurrent writer may have won the race; that is fine
                raise
        return final

    def get(self, key: str) -> CachedCase:
        """Open an entry memory-mapped (raises ``FileNotFoundError`` if absent)."""
        folder = self.path(key)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        image = np.load(folder / "image.npy", mmap_mode="r", allow_pickle=False)
        mask = np.load(folder / "mask.npy", mmap_mode="r", allow_pickle=False)
        return CachedCase(image=image, mask=mask, meta=meta)
