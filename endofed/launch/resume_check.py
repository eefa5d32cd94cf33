"""Pre-flight of ``endofed-server --resume``: the saved server state is checked before the SuperLink starts.

The ServerApp (``server/app.py``, ``load_server_state``) reads ``server_state.safetensors`` only once the
SuperLink is up, the sites are registered and ``flwr run`` has submitted the run; a bad file then ends the run
``failed`` with no more than "see superlink.log". :func:`check_resume_state` runs the same checking function
first (:func:`endofed.io.server_state.read_server_state`) and says in one line which file and which check
failed: missing, metadata, metadata hash, format, truncated, content hash, unreadable, kind, experiment config,
phase and round, strategy state, encoder. The hashes cover edits, torn writes and partial copies; they are not
a signature (see :mod:`endofed.io.server_state`).
"""

from __future__ import annotations

from pathlib import Path

from endofed.config import ExperimentConfig, to_dict
from endofed.errors import ConfigError
from endofed.io.server_state import ServerStateError, check_phase_round, read_server_state, safetensors_shortfall

__all__ = ["check_phase_round", "check_resume_state", "safetensors_shortfall"]


def check_resume_state(run_dir: Path, experiment: ExperimentConfig) -> tuple[str, int]:
    """Check ``run_dir/server_state.safetensors`` as the ServerApp will load it; returns the saved (phase, round).

    Raises:
        ConfigError: one line naming the file and the check that failed.
    """
    try:
        _, meta = read_server_state(Path(run_dir), to_dict(experiment))
    except ServerStateError as exc:
        raise ConfigError(str(exc)) from None
    return str(meta["phase"]), int(meta["round"])
