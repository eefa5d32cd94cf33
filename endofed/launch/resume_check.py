"""Pre-flight of ``endofed-server --resume``: the saved server state is checked before the SuperLink starts.

The ServerApp (``server/app.py``, ``load_server_state``) reads ``server_state.safetensors`` only once the
SuperLink is up, the sites are registered and ``flwr run`` has submitted the run; a bad file then ends the run
``failed`` with no more than "see superlink.log". :func:`check_resume_state` makes the same reads first, with
:mod:`endofed.io.checkpoint`, and says in one line which file and which check failed: missing, metadata,
truncated, content hash, unreadable, kind, experiment config, phase and round, strategy state, encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from endofed.config import ExperimentConfig, to_dict
from endofed.errors import ConfigError, EndofedError
from endofed.federated.protocol import FINETUNE, PHASES, PRETRAIN, STATE_FILE, STATE_GLOBAL_PREFIX, STATE_KIND

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


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


def _load(path: Path) -> tuple[list[str], dict[str, Any]]:
    """The tensor names and metadata of the state file, after the checks of ``load_checkpoint`` (one line each)."""
    from endofed.io.checkpoint import load_checkpoint, read_metadata  # torch: only for --resume

    try:
        read_metadata(path)  # the metadata file first, as load_checkpoint does
        shortfall = safetensors_shortfall(path)
        if shortfall is not None:
            raise ConfigError(f"{path} is truncated ({shortfall}): the file was cut short (disk full, a partial copy?)")
        tensors, meta = load_checkpoint(path)
    except ConfigError:
        raise
    except EndofedError as exc:  # CheckpointError: names the file and the failed check
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}") from None
    return list(tensors), meta


def check_phase_round(meta: dict[str, Any], planned: dict[str, int]) -> str | None:
    """What is wrong with the saved ``phase`` and ``round`` given the rounds ``planned`` per phase; ``None`` if fine."""
    phase, saved_round = meta.get("phase"), meta.get("round")
    if phase not in PHASES:
        return f"its phase {phase!r} is not one of {', '.join(PHASES)}"
    if isinstance(saved_round, bool) or not isinstance(saved_round, int):
        return f"its round {saved_round!r} is not a whole number"
    if not 1 <= saved_round <= planned[phase]:
        return f"its round {saved_round} is outside 1..{planned[phase]} (the {phase} rounds of this run)"
    return None


def check_resume_state(run_dir: Path, experiment: ExperimentConfig) -> tuple[str, int]:
    """Check ``run_dir/server_state.safetensors`` as the ServerApp will load it; returns the saved (phase, round).

    Raises:
        ConfigError: one line naming the file and the check that failed.
    """
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise ConfigError(
            f"nothing to resume in {run_dir}: no round of that run completed ({STATE_FILE} missing); "
            "start a new run with another output_dir"
        )
    names, meta = _load(path)
    if meta.get("kind") != STATE_KIND:
        raise ConfigError(f"{path} is not a server state (its metadata kind is {meta.get('kind')!r})")
    from endofed.io.checkpoint import config_hash

    if meta.get("config_hash") != config_hash(to_dict(experiment)):
        raise ConfigError(
            f"{path} was saved with another experiment config (config_hash differs): the experiment YAML or its "
            "overrides changed since the run started; resume needs the same config"
        )
    fed = experiment.federation
    problem = check_phase_round(meta, {PRETRAIN: fed.pretrain_rounds, FINETUNE: fed.finetune_rounds})
    if problem is not None:
        raise ConfigError(f"{path} has an invalid phase/round in its metadata: {problem}")
    if not isinstance(meta.get("strategy"), dict):
        raise ConfigError(f"{path} has no strategy state in its metadata ('strategy' is {meta.get('strategy')!r})")
    if not any(name.startswith(STATE_GLOBAL_PREFIX) for name in names):
        raise ConfigError(f"{path} holds no global encoder (no tensor named {STATE_GLOBAL_PREFIX}*)")
    return str(meta["phase"]), int(meta["round"])
