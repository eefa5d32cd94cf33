"""Preprocessing cache in the site's work dir, keyed by source-file content hashes + preprocessing config.

Layout: ``<work_dir>/cache/<key[:2]>/<key>/{image.npy, mask.npy, meta.json}``. Entries are written to a
temporary folder and renamed into place, so an interrupted run never leaves a half-written entry. Reads
are memory-mapped (``np.load(mmap_mode="r")``): an epoch never touches NIfTI. Changing a source file's
bytes or any preprocessing setting changes the key, so the case is preprocessed again.

``<work_dir>/cache/sources.json`` (:class:`SourceIndex`) records each source file's SHA-256 with the file's
stat when it was hashed, so that a start-up whose sources are unchanged does not read them again. It holds
paths: like the whole cache it is site-local and never sent anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endofed.config import DataConfig, to_dict
from endofed.io.files import writing
from endofed.io.hashing import file_sha256
from endofed.io.jsonl import write_json

# Bump when the preprocessing code changes what it produces for the same inputs and config.
PREPROCESS_VERSION = 2  # 2: entries record each modality's decoded-voxel digest and thumbnail (duplicates)
# DataConfig fields that only decide which inputs are refused: they cannot change a cached case.
INPUT_CHECK_FIELDS = ("max_voxels", "max_inflation", "spacing_range_mm", "fov_range_mm", "near_duplicate_correlation")
SOURCE_INDEX = "sources.json"
SOURCE_INDEX_VERSION = 1
# A file changed less than this before it was hashed may change again within the same timestamp tick (coarse
# kernel clocks, 2 s on FAT, clock skew on network shares): its stat is not trusted, the next start-up hashes it.
RACY_NS = 2_000_000_000


def file_digest(path: Path) -> str:
    """SHA-256 of a source file's bytes (opened read-only): the content part of a cache key."""
    return file_sha256(path)


def config_digest(cfg: DataConfig) -> str:
    """SHA-256 of the preprocessing config and code version (stable across runs and machines)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in INPUT_CHECK_FIELDS}
    text = json.dumps({"version": PREPROCESS_VERSION, "data": data}, sort_keys=True)
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
            with writing(tmp):
                np.save(tmp / "image.npy", image)
                np.save(tmp / "mask.npy", mask.astype(np.uint8, copy=False))
                (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
            os.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.contains(key):  # a concurrent writer may have won the race; that is fine
                raise
        return final

    def meta(self, key: str) -> dict[str, Any]:
        """The JSON metadata of an entry alone (raises ``FileNotFoundError`` if absent)."""
        return dict(json.loads((self.path(key) / "meta.json").read_text(encoding="utf-8")))

    def get(self, key: str) -> CachedCase:
        """Open an entry memory-mapped (raises ``FileNotFoundError`` if absent)."""
        folder = self.path(key)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        image = np.load(folder / "image.npy", mmap_mode="r", allow_pickle=False)
        mask = np.load(folder / "mask.npy", mmap_mode="r", allow_pickle=False)
        return CachedCase(image=image, mask=mask, meta=meta)


@dataclass(frozen=True)
class FileStamp:
    """What ``os.stat`` says about a file: any change of its bytes changes at least one field.

    A write in place changes ``mtime_ns`` and ``ctime_ns`` (``ctime`` even when the mtime is set back); a
    replacement (new file renamed over the old one) changes ``inode``.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        """The current stamp of ``path`` (follows symbolic links, as reading the file does)."""
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class SourceIndex:
    """Site-local record of source files' SHA-256 and the :class:`FileStamp` each had when hashed.

    :meth:`lookup` answers from the record when the stamp is unchanged (a few ``stat`` calls instead of
    reading every image); :meth:`hash` reads the file and records it. A missing or unreadable index is an
    empty one. :meth:`save` keeps only the files used since the index was opened (the current manifest).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries = self._read(self.path)
        self._used: set[str] = set()
        self._changed = False

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, Any]]:
        """The recorded entries (empty when the file is absent, corrupt or of another version)."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(document, dict) or document.get("version") != SOURCE_INDEX_VERSION:
            return {}
        files = document.get("files")
        return dict(files) if isinstance(files, dict) else {}

    def lookup(self, path: Path) -> str | None:
        """The recorded digest of ``path`` if its stamp is unchanged and was not racy when hashed, else ``None``."""
        key = os.fspath(path)
        entry = self._entries.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            return None
        stamp = FileStamp.of(path)
        recorded = {k: entry.get(k) for k in asdict(stamp)}
        hashed_ns = entry.get("hashed_ns")
        settled = isinstance(hashed_ns, int) and hashed_ns - max(stamp.mtime_ns, stamp.ctime_ns) >= RACY_NS
        if recorded != asdict(stamp) or not settled:
            return None
        self._used.add(key)
        return str(entry["sha256"])

    def hash(self, path: Path) -> str:
        """Read and hash ``path`` now (:func:`file_digest`) and record its digest with its stamp."""
        hashed_ns = time.time_ns()
        stamp = FileStamp.of(path)  # taken before reading: a change while hashing shows at the next lookup
        digest = file_digest(path)
        key = os.fspath(path)
        self._entries[key] = {**asdict(stamp), "hashed_ns": hashed_ns, "sha256": digest}
        self._used.add(key)
        self._changed = True
        return digest

    def save(self) -> None:
        """Write the index (atomically) if it changed; entries of files no longer used are dropped."""
        if not self._changed and self._used == set(self._entries):
            return
        files = {key: self._entries[key] for key in sorted(self._used)}
        write_json(self.path, {"version": SOURCE_INDEX_VERSION, "files": files})
        self._entries, self._changed = files, False
