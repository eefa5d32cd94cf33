"""Checkpoints as a safetensors file plus a JSON metadata file; loading never unpickles anything.

A checkpoint ``name.safetensors`` has its metadata next to it in ``name.json``: the caller's metadata
plus ``endofed_version``, ``created_utc``, ``format_version``, ``sha256`` (of the safetensors file) and
``metadata_sha256`` (of the metadata's own canonical JSON: every key but this one, sorted, compact). Since the
metadata holds the tensor file's hash, ``metadata_sha256`` is one hash over both files. Both files are written
to a temporary file in the same folder and moved into place with ``os.replace``, so a reader sees either the
old or the new file, never a half-written one. Loading checks both hashes before reading any tensor, and reads
tensors with ``safetensors.torch.load_file`` only: no ``torch.load``, no pickle, so a checkpoint received from
elsewhere cannot run code (house style 11).

What the two hashes catch: an edit of either file (a round number, a claim, one tensor byte), a file cut
short or bit-rotted, a partial copy, another checkpoint's tensor file put next to this metadata, and a torn
write (the tensor file replaced but not yet its metadata, or the reverse). What they do not catch: someone who
edits a file and recomputes the hashes (they are checksums, not a signature: whoever can write the folder can
forge them), or a whole, consistent pair of files copied from another run. Format 1 (endofed before
``metadata_sha256``) still loads with its old check, the tensor file's hash only; a reader that needs the
metadata covered too (the coordinator's resume state) requires format 2.

Site-local state that never leaves the site and is only read back by the site that wrote it (a federated
site's optimiser moments: ~0.8 GB for a ViT-B MAE every round) may be written with ``content_hash=False``
(metadata ``"sha256": null``) and read with ``verify_hash=False``: hashing it costs about a second per round
and only guards against the site's own disk. ``verify_hash=False`` checks neither hash. The default loader
refuses such a file, so every checkpoint that is exchanged or published is still verified.
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

FORMAT_VERSION = 2  # 2: metadata_sha256 covers the metadata (and through its sha256 the tensor file)
READABLE_FORMATS = (1, 2)  # 1: sha256 covers the tensor file only
SUFFIX = ".safetensors"
METADATA_HASH = "metadata_sha256"
RESERVED_KEYS = ("endofed_version", "created_utc", "format_version", "sha256", METADATA_HASH)
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


def metadata_sha256(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a metadata record's canonical JSON: every key but ``metadata_sha256``, sorted, compact.

    Raises:
        ValueError: if the record is not strict JSON (NaN/inf, non-string keys).
    """
    body = {key: value for key, value in record.items() if key != METADATA_HASH}
    text = _dump_json(body, "metadata", sort_keys=True, separators=(",", ":"))
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
def _atomic_target(path: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, on error delete it.

    ``durable``: flush the file to disk before the move (``False``: the page cache writes it back later).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if durable:
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
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
    content_hash: bool = True,
    durable: bool = True,
) -> Path:
    """Write ``path`` (safetensors) and its JSON metadata atomically.

    Args:
        path: target file, ending in ``.safetensors``; missing parent folders are created.
        tensors: name -> tensor (any device/dtype; saved contiguous on CPU, shared storage cloned).
        metadata: JSON-serialisable mapping with string keys (strict JSON: no NaN/inf; convert an
            undefined metric to ``None``). The keys of :data:`RESERVED_KEYS` are added here.
        content_hash: record the file's SHA-256. ``False`` only for site-local state that is read back with
            ``load_checkpoint(..., verify_hash=False)`` by the site itself (see the module docstring).
        durable: flush the files to disk before they take their names. ``False`` only for a file whose
            readers check its content another way (a site's received encoder: its digest).

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
    with _atomic_target(path, durable) as tmp, writing(path):
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
    record[METADATA_HASH] = metadata_sha256(record)
    text = _dump_json(record, "metadata", indent=2, sort_keys=True)
    with _atomic_target(metadata_path(path), durable) as tmp, writing(metadata_path(path)):
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
    if type(version) is not int or version not in READABLE_FORMATS:
        readable = " or ".join(map(str, READABLE_FORMATS))
        raise CheckpointError(f"checkpoint {path} has format_version {version!r}; this endofed reads {readable}")
    if verify_hash and version >= 2:
        _verify_metadata_hash(record, meta_file)
    return record


def _verify_metadata_hash(record: dict[str, Any], meta_file: Path) -> None:
    """Require the record's ``metadata_sha256`` to be the hash of its canonical content (format 2 and later)."""
    recorded = record.get(METADATA_HASH)
    if not isinstance(recorded, str):
        raise CheckpointError(f"checkpoint metadata {meta_file} has no {METADATA_HASH} entry")
    try:
        actual = metadata_sha256(record)
    except ValueError:  # NaN/Infinity literals: never written by save_checkpoint
        actual = None
    if actual != recorded:
        raise CheckpointError(
            f"checkpoint metadata {meta_file} is corrupt or was modified ({METADATA_HASH} differs from its content)"
        )


def read_metadata(path: Path, verify_hash: bool = True) -> dict[str, Any] | None:
    """The JSON metadata of checkpoint ``path`` without reading its tensors, or ``None`` if it does not exist.

    With ``verify_hash`` its ``metadata_sha256`` is checked (format 2); the tensor file's hash is not (that
    needs the whole file: :func:`load_checkpoint`).

    Raises:
        CheckpointError: the metadata is missing, unreadable, modified or of another format version.
    """
    path = Path(path)
    return _read_metadata(path, verify_hash) if path.is_file() else None


def move_checkpoint(source: Path, target: Path) -> None:
    """Rename a checkpoint and its metadata (``os.replace``: an existing ``target`` is replaced)."""
    os.replace(metadata_path(source), metadata_path(target))
    os.replace(source, target)


def load_checkpoint(path: Path, verify_hash: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`, after checking its hashes.

    Order of checks: the file exists, its metadata JSON exists, parses and matches its ``metadata_sha256``
    (format 2), the file looks like safetensors, its SHA-256 matches the metadata; only then are tensors read
    (on CPU). A format 1 checkpoint has no ``metadata_sha256``: only its tensor file is checked.

    Args:
        path: the ``.safetensors`` file.
        verify_hash: check the hashes (the default; a file written without one is refused). ``False``
            only where a site reads back its own local state (see the module docstring); every other check
            still runs, and no loader ever unpickles.

    Returns:
        ``(tensors, metadata)``; ``metadata`` includes the keys of :data:`RESERVED_KEYS` (format 1: all but
        ``metadata_sha256``).

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
        raise CheckpointError(
            f"checkpoint {path} is corrupt or was modified (SHA-256 differs from its metadata "
            f"{metadata_path(path).name}: edited, cut short, or not written together with it)"
        )
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    return tensors, record
