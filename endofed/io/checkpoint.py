"""Checkpoints as a safetensors file plus a JSON metadata file; loading never unpickles anything.

A checkpoint ``name.safetensors`` has its metadata next to it in ``name.json``: the caller's metadata
plus ``endofed_version``, ``created_utc``, ``format_version`` and ``sha256`` (of the safetensors file).
Both files are written to a temporary file in the same folder and moved into place with ``os.replace``,
so a reader sees either the old or the new file, never a half-written one. Loading checks the recorded
SHA-256 before reading any tensor, and reads tensors with ``safetensors.torch.load_file`` only: no
``torch.load``, no pickle, so a checkpoint received from elsewhere cannot run code (house style 11).

Site-local state that never leaves the site and is only read back by the site that wrote it (a federated
site's optimiser moments: ~0.8 GB for a ViT-B MAE every round) may be written with ``content_hash=False``
(metadata ``"sha256": null``) and read with ``verify_hash=False``: hashing it costs about a second per round
and only guards against the site's own disk. The default loader refuses such a file, so every checkpoint that
is exchanged or published is still verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import endofed
from endofed.errors import EndofedError
from endofed.io.files import writing
from endofed.io.hashing import file_sha256

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = ".safetensors"
RESERVED_KEYS = ("endofed_version", "created_utc", "format_version", "sha256")
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


class CheckpointError(EndofedError):
    """A checkpoint is missing, not a safetensors file, lacks metadata, or was modified."""


# --------------------------------------------------------------------------------------------------
# Hashing and metadata
# --------------------------------------------------------------------------------------------------


def _dump_json(value: Any, what: str, **kwargs: Any) -> str:
    """Strict JSON text of ``value`` (no NaN/inf); ``ValueError`` naming ``what`` otherwise."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (no NaN/inf, string keys): {exc}") from None


def config_hash(cfg_dict: Mapping[str, Any]) -> str:
    """Stable SHA-256 (hex) of a config dict: JSON with sorted keys and compact separators.

    Key order does not matter; any change of a value does. Use :func:`endofed.config.to_dict` first.

    Raises:
        ValueError: if the dict is not JSON-serialisable.
    """
    text = _dump_json(cfg_dict, "config dict", sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_metadata(metadata: Mapping[str, Any]) -> None:
    """Require a JSON-serialisable mapping with string keys that avoids the reserved keys."""
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping, got {type(metadata).__name__}")
    bad_keys = [key for key in metadata if not isinstance(key, str)]
    if bad_keys:
        raise ValueError(f"metadata keys must be strings, got {bad_keys[0]!r}")
    clash = sorted(set(metadata) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"metadata key {clash[0]!r} is reserved (set by save_checkpoint)")
    _dump_json(dict(metadata), "metadata")


# --------------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------------


def _storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, each owning its whole storage (clones shared/aliased ones).

    safetensors refuses tensors that share storage (tied weights, views of one buffer); a tensor whose
    storage was already seen, or that covers only part of its storage, is cloned.
    """
    if not isinstance(tensors, Mapping):
        raise ValueError(f"tensors must be a mapping of names to tensors, got {type(tensors).__name__}")
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise ValueError(f"tensor names must be strings, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"tensors[{name!r}] must be a torch.Tensor, got {type(tensor).__name__}")
        cpu = tensor.detach().to("cpu").contiguous()
        storage = cpu.untyped_storage()
        whole = storage.nbytes() == cpu.numel() * cpu.element_size()
        if storage.data_ptr() in seen or not whole:
            cpu = cpu.clone()
        seen.add(cpu.untyped_storage().data_ptr())
        out[name] = cpu
    return out


def module_state(module: torch.nn.Module, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """State dict of ``module``, or of its submodule named ``prefix`` (e.g. ``"encoder"``).

    Keys are relative to the chosen submodule, so ``module_state(model, "encoder")`` equals
    ``model.encoder.state_dict()`` and loads into any encoder with :func:`load_module_state`.

    Raises:
        ValueError: if ``module`` has no submodule ``prefix``.
    """
    if prefix is None:
        return dict(module.state_dict())
    try:
        sub = module.get_submodule(prefix)
    except AttributeError:
        raise ValueError(f"module {type(module).__name__} has no submodule {prefix!r}") from None
    return dict(sub.state_dict())


def load_module_state(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Load tensors into ``module`` by name with ``strict=True`` (house style 4).

    Raises:
        ValueError: listing missing/unexpected keys or shape mismatches.
    """
    try:
        module.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:4])
        raise ValueError(f"state does not fit {type(module).__name__}: {detail}") from None


# --------------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------------


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, on error delete it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def metadata_path(path: Path) -> Path:
    """The JSON metadata file that belongs to checkpoint ``path``."""
    return Path(path).with_suffix(".json")


def os_error_of(exc: SafetensorError, path: Path) -> Exception:
    """The ``OSError`` behind a failed safetensors write (it reports ``SafetensorError("... (os error 28)")``)."""
    match = re.search(r"os error (\d+)", str(exc))
    if match is None:
        return EndofedError(f"cannot write checkpoint {path}: {exc}")
    code = int(match.group(1))
    return OSError(code, os.strerror(code), str(path))


def save_checkpoint(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], content_hash: bool = True
) -> Path:
    """Write ``path`` (safetensors) and its JSON metadata atomically.

    Args:
        path: target file, ending in ``.safetensors``; missing parent folders are created.
        tensors: name -> tensor (any device/dtype; saved contiguous on CPU, shared storage cloned).
        metadata: JSON-serialisable mapping with string keys (strict JSON: no NaN/inf; convert an
            undefined metric to ``None``). The keys of :data:`RESERVED_KEYS` are added here.
        content_hash: record the file's SHA-256. ``False`` only for site-local state that is read back with
            ``load_checkpoint(..., verify_hash=False)`` by the site itself (see the module docstring).

    Returns:
        ``path``.

    Raises:
        ValueError: bad suffix, non-tensor values, or metadata that is not JSON-serialisable.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"checkpoint path must end in {SUFFIX}, got {str(path)!r}")
    _check_metadata(metadata)
    storable = _storable(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_target(path) as tmp, writing(path):
        try:
            save_file(storable, tmp)
        except SafetensorError as exc:
            raise os_error_of(exc, path) from exc
        digest = file_sha256(tmp) if content_hash else None
    record = {
        **dict(metadata),
        "endofed_version": endofed.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format_version": FORMAT_VERSION,
        "sha256": digest,
    }
    text = _dump_json(record, "metadata", indent=2, sort_keys=True)
    with _atomic_target(metadata_path(path)) as tmp, writing(metadata_path(path)):
        tmp.write_text(text + "\n", encoding="utf-8")
    logger.info("saved checkpoint %s (%d tensors, sha256 %s)", path, len(storable), (digest or "none")[:12])
    return path


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _looks_like_safetensors(path: Path) -> bool:
    """Cheap format sniff: 8-byte little-endian header length, then a JSON object that fits the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 2 <= header_len <= min(_MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{"


def _read_metadata(path: Path, verify_hash: bool = True) -> dict[str, Any]:
    """Parse and minimally validate the JSON metadata of checkpoint ``path`` (a hash is required if verifying)."""
    meta_file = metadata_path(path)
    if not meta_file.is_file():
        raise CheckpointError(f"checkpoint metadata {meta_file} not found (expected next to {path})")
    try:
        record = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint metadata {meta_file} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("sha256", 0), (str, type(None))):
        raise CheckpointError(f"checkpoint metadata {meta_file} has no sha256 entry")
    if verify_hash and record["sha256"] is None:
        raise CheckpointError(f"checkpoint {path} was written without a content hash (site-local state); refused")
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format_version {version!r}; this endofed reads {FORMAT_VERSION}")
    return record


def read_metadata(path: Path, verify_hash: bool = True) -> dict[str, Any] | None:
    """The JSON metadata of checkpoint ``path`` without reading its tensors, or ``None`` if it does not exist.

    Raises:
        CheckpointError: the metadata is missing, unreadable or of another format version.
    """
    path = Path(path)
    return _read_metadata(path, verify_hash) if path.is_file() else None


def move_checkpoint(source: Path, target: Path) -> None:
    """Rename a checkpoint and its metadata (``os.replace``: an existing ``target`` is replaced)."""
    os.replace(metadata_path(source), metadata_path(target))
    os.replace(source, target)


def load_checkpoint(path: Path, verify_hash: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`, after checking its SHA-256.

    Order of checks: the file exists, its metadata JSON exists and parses, the file looks like
    safetensors, its SHA-256 matches the metadata; only then are tensors read (on CPU).

    Args:
        path: the ``.safetensors`` file.
        verify_hash: check the content hash (the default; a file written without one is refused). ``False``
            only where a site reads back its own local state (see the module docstring); every other check
            still runs, and no loader ever unpickles.

    Returns:
        ``(tensors, metadata)``; ``metadata`` includes the keys of :data:`RESERVED_KEYS`.

    Raises:
        CheckpointError: (a ``ValueError``) one line naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    record = _read_metadata(path, verify_hash)
    if not _looks_like_safetensors(path):
        raise CheckpointError(f"checkpoint {path} is not a safetensors file")
    if verify_hash and file_sha256(path) != record["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt or was modified (SHA-256 differs from its metadata)")
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    return tensors, record
