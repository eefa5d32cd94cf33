"""The coordinator's resume state on disk, and the one function that checks it (ServerApp and pre-flight).

``server_state.safetensors`` + ``server_state.json`` (a checkpoint of :mod:`endofed.io.checkpoint`) hold,
after every completed round: the phase and round, the float32 global encoder (tensors ``global.*``), the
strategy's arrays (FedAdam's moments) and bookkeeping (the sites' ``num-examples`` claims, the last
evaluation), and the experiment config's hash. ``endofed-server --resume`` continues from them, so every one
of these values decides what the resumed run does: an edited round number would skip rounds, an edited claim
would reweight a site.

So a resume state must be of checkpoint format 2, whose ``metadata_sha256`` covers the whole JSON and,
through the tensor file's ``sha256`` recorded in it, the tensors: one hash over both files. Refused, in one
line naming the file: an edit of either file, a file cut short, a partial copy, another run's tensor file
next to this JSON, a torn write (new tensors, old JSON), a format 1 state (its JSON is not covered). Not
refused: a forger who rewrites a file and recomputes both hashes (a checksum is not a signature; whoever can
write the run folder can do this), or a whole, consistent state of another run with the same config.

:func:`read_server_state` is used by the ServerApp (``server/app.py``) and by the pre-flight
(:mod:`endofed.launch.resume_check`); this module does not import ``flwr``, and it imports torch only when a
state is read or written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from endofed.errors import EndofedError
from endofed.federated.protocol import FINETUNE, PHASES, PRETRAIN, STATE_FILE, STATE_GLOBAL_PREFIX, STATE_KIND

if TYPE_CHECKING:
    import torch

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
STATE_FORMAT = 2  # the first checkpoint format whose hash covers the metadata


class ServerStateError(EndofedError):
    """A resume state is missing, damaged, modified, or does not belong to this run; one line naming the file."""


def safetensors_shortfall(path: Path) -> str | None:
    """Why the safetensors file ``path`` is shorter than its own header says; ``None`` when it is complete.

    A safetensors file is an 8-byte little-endian header length, a JSON header giving every tensor's
    ``data_offsets`` (relative to the end of the header), then the data. A file that does not start like one,
    or whose header is not JSON, is left to the loader.
    """
    size = Path(path).stat().st_size
    with Path(path).open("rb") as handle:
        head = handle.read(9)
        if len(head) < 9:
            return f"{size} bytes, less than a header"
        header_len = int.from_bytes(head[:8], "little")
        if head[8:9] != b"{" or header_len > MAX_HEADER_BYTES:
            return None  # not safetensors at all: the loader says so
        if header_len > size - 8:
            return f"{size} bytes, but its header alone claims {header_len}"
        handle.seek(8)
        try:
            header = json.loads(handle.read(header_len))
            ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None
    expected = 8 + header_len + max(ends, default=0)
    return f"{size} of {expected} bytes" if size < expected else None


def check_phase_round(meta: Mapping[str, Any], planned: Mapping[str, int] | None) -> str | None:
    """What is wrong with the saved ``phase`` and ``round`` given the rounds ``planned`` per phase; ``None`` if fine.

    Without a plan (``planned=None``) the round need only be a whole number from 1.
    """
    phase, saved_round = meta.get("phase"), meta.get("round")
    if phase not in PHASES:
        return f"its phase {phase!r} is not one of {', '.join(PHASES)}"
    if isinstance(saved_round, bool) or not isinstance(saved_round, int):
        return f"its round {saved_round!r} is not a whole number"
    last = planned[phase] if planned is not None else saved_round
    if not 1 <= saved_round <= last:
        return f"its round {saved_round} is outside 1..{last} (the {phase} rounds of this run)"
    return None


def planned_rounds(cfg_dict: Mapping[str, Any]) -> dict[str, int] | None:
    """The rounds per phase of an experiment config dict (``endofed.config.to_dict``); ``None`` if it has none."""
    fed = cfg_dict.get("federation")
    if not isinstance(fed, Mapping):
        return None
    pretrain, finetune = fed.get("pretrain_rounds"), fed.get("finetune_rounds")
    if type(pretrain) is not int or type(finetune) is not int:
        return None
    return {PRETRAIN: pretrain, FINETUNE: finetune}


def save_server_state_file(out: Path, phase: str, server_round: int, tensors: Mapping[str, torch.Tensor],
                           strategy_meta: Mapping[str, Any], cfg_dict: Mapping[str, Any]) -> Path:  # fmt: skip
    """Write ``out/server_state.safetensors`` and its JSON, each atomically; one hash covers both.

    ``tensors`` holds the global encoder as ``global.*`` and the strategy's arrays. The previous round's state
    stays until it is replaced; a crash between the two files leaves a torn state, which resume refuses.
    """
    from endofed.io.checkpoint import config_hash, save_checkpoint  # torch: only when a state is written

    metadata = {"kind": STATE_KIND, "phase": phase, "round": server_round, "config_hash": config_hash(cfg_dict),
                "strategy": dict(strategy_meta)}  # fmt: skip
    return save_checkpoint(Path(out) / STATE_FILE, tensors, metadata)


def _verified(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of the state file after the metadata hash, the format, the length and the tensor hash."""
    from endofed.io.checkpoint import METADATA_HASH, load_checkpoint, read_metadata  # torch: only for --resume

    try:
        meta = read_metadata(path)  # the metadata file and its own hash first, as load_checkpoint does
        if meta is not None and meta.get("format_version", 0) < STATE_FORMAT:
            raise ServerStateError(
                f"{path} was written by an older endofed (checkpoint format {meta.get('format_version')}, no "
                f"{METADATA_HASH}): its metadata is not covered by a hash, so it cannot be resumed"
            )
        shortfall = safetensors_shortfall(path)
        if shortfall is not None:
            raise ServerStateError(
                f"{path} is truncated ({shortfall}): the file was cut short (disk full, a partial copy?)"
            )
        return load_checkpoint(path)
    except ServerStateError:
        raise
    except EndofedError as exc:  # CheckpointError: names the file and the failed check
        raise ServerStateError(str(exc)) from None
    except OSError as exc:
        raise ServerStateError(f"{path} cannot be read: {exc.strerror or exc}") from None


def read_server_state(run_dir: Path, cfg_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The verified resume state of the run in ``run_dir``: ``(tensors, metadata)``.

    Checks, each failing with one line naming the file: present; metadata JSON, its ``metadata_sha256`` and
    checkpoint format 2; not truncated; the tensor file's SHA-256; kind; the experiment config (``cfg_dict``,
    from ``endofed.config.to_dict``) by hash; phase and round (within the planned rounds when ``cfg_dict``
    has them); a strategy state; a global encoder (``global.*`` tensors).

    Raises:
        ServerStateError: (a ``ValueError``) the first check that failed.
    """
    from endofed.io.checkpoint import config_hash

    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise ServerStateError(
            f"nothing to resume in {run_dir}: no round of that run completed ({STATE_FILE} missing); "
            "start a new run with another output_dir"
        )
    tensors, meta = _verified(path)
    if meta.get("kind") != STATE_KIND:
        raise ServerStateError(f"{path} is not a server state (its metadata kind is {meta.get('kind')!r})")
    if meta.get("config_hash") != config_hash(cfg_dict):
        raise ServerStateError(
            f"{path} was saved with another experiment config (config_hash differs): the experiment YAML or its "
            "overrides changed since the run started; resume needs the same config"
        )
    problem = check_phase_round(meta, planned_rounds(cfg_dict))
    if problem is not None:
        raise ServerStateError(f"{path} has an invalid phase/round in its metadata: {problem}")
    if not isinstance(meta.get("strategy"), dict):
        raise ServerStateError(f"{path} has no strategy state in its metadata ('strategy' is {meta.get('strategy')!r})")
    if not any(name.startswith(STATE_GLOBAL_PREFIX) for name in tensors):
        raise ServerStateError(f"{path} holds no global encoder (no tensor named {STATE_GLOBAL_PREFIX}*)")
    return tensors, meta
