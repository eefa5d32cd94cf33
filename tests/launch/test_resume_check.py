"""The --resume pre-flight: each way a saved server state can be broken is named with its file and check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from endofed.config import load_config, to_dict
from endofed.errors import ConfigError
from endofed.federated.protocol import STATE_FILE, STATE_KIND
from endofed.io.checkpoint import config_hash, metadata_path, save_checkpoint
from endofed.launch.resume_check import check_phase_round, check_resume_state, safetensors_shortfall
from tests.helpers import TINY


@pytest.fixture(scope="module")
def experiment():
    return load_config(TINY)  # 2 pre-training rounds, 1 fine-tuning round


def save_state(run_dir: Path, experiment, **meta) -> Path:
    """A server state as the ServerApp writes it (global encoder + a strategy moment), metadata overridable.

    A value ``None`` leaves its key out.
    """
    metadata = {"kind": STATE_KIND, "phase": "pretrain", "round": 1, "config_hash": config_hash(to_dict(experiment)),
                "strategy": {"claims": {}}} | meta  # fmt: skip
    after = metadata["round"] if isinstance(metadata["round"], int) else 1  # each round has other weights
    tensors = {"global.blocks.0.weight": torch.arange(64.0) * after, "m.blocks.0.weight": torch.ones(64)}
    return save_checkpoint(run_dir / STATE_FILE, tensors, {k: v for k, v in metadata.items() if v is not None})


def edit_metadata(path: Path, **changes) -> None:
    """Change the state's JSON by hand (its hashes stay as they were); a change to ``None`` deletes the key."""
    record = json.loads(metadata_path(path).read_text()) | changes
    metadata_path(path).write_text(json.dumps({k: v for k, v in record.items() if v is not None}))


def resave(**meta):  # type: ignore[no-untyped-def]
    """A break: the state saved again, hashes and all, with these metadata values (``None`` leaves the key out)."""
    return lambda path: save_state(path.parent, load_config(TINY), **meta)


def test_shortfall_of_a_hand_made_safetensors_file(tmp_path):
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    whole = len(header).to_bytes(8, "little") + header + b"\0" * 8
    path = tmp_path / "x.safetensors"
    path.write_bytes(whole)
    assert safetensors_shortfall(path) is None
    path.write_bytes(whole[:-3])
    assert safetensors_shortfall(path) == f"{len(whole) - 3} of {len(whole)} bytes"
    path.write_bytes(whole[:20])
    assert safetensors_shortfall(path) == f"20 bytes, but its header alone claims {len(header)}"
    path.write_bytes(whole[:5])
    assert safetensors_shortfall(path) == "5 bytes, less than a header"
    path.write_bytes((3).to_bytes(8, "little") + b"{bc")  # header not JSON: the loader's business
    assert safetensors_shortfall(path) is None
    path.write_bytes(b"PK\x03\x04 a zip file")  # not safetensors at all: the loader's business
    assert safetensors_shortfall(path) is None


def test_phase_and_round_are_checked_against_the_planned_rounds():
    planned = {"pretrain": 2, "finetune": 1}
    assert check_phase_round({"phase": "pretrain", "round": 2}, planned) is None
    assert check_phase_round({"phase": "finetune", "round": 1}, planned) is None
    assert "is not one of pretrain, finetune" in check_phase_round({"phase": "train", "round": 1}, planned)
    assert "outside 1..2" in check_phase_round({"phase": "pretrain", "round": 3}, planned)
    assert "outside 1..1" in check_phase_round({"phase": "finetune", "round": 0}, planned)
    assert "not a whole number" in check_phase_round({"phase": "pretrain", "round": "1"}, planned)
    assert "not a whole number" in check_phase_round({"phase": "pretrain", "round": True}, planned)


def test_a_good_state_passes_and_gives_its_phase_and_round(tmp_path, experiment):
    save_state(tmp_path, experiment, phase="finetune", round=1)
    assert check_resume_state(tmp_path, experiment) == ("finetune", 1)


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def edited(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern in the last tensor: same size, other content
    path.write_bytes(bytes(data))


def another_runs_tensors(path: Path) -> None:
    other = save_state(path.parent / "other-run", load_config(TINY))
    data = bytearray(other.read_bytes())
    data[-4:] = b"\x00\x00\x00\x40"  # another run's state: same names and shapes, other weights
    path.write_bytes(bytes(data))


def torn_write(path: Path) -> None:
    old_json = metadata_path(path).read_text()
    save_state(path.parent, load_config(TINY), round=2)  # round 2's tensors and JSON ...
    metadata_path(path).write_text(old_json)  # ... but the crash came before its JSON replaced round 1's


BROKEN = {
    "missing": (
        lambda p: (p.unlink(), metadata_path(p).unlink()),
        r"nothing to resume in .*server_state\.safetensors "
        r"missing",
    ),  # fmt: skip
    "metadata missing": (lambda p: metadata_path(p).unlink(), r"metadata .*server_state\.json not found"),
    "metadata not JSON": (lambda p: metadata_path(p).write_text("{"), r"server_state\.json is not valid JSON"),
    "truncated": (truncated, r"server_state\.safetensors is truncated \(\d+ of \d+ bytes\)"),
    "edited": (edited, r"server_state\.safetensors is corrupt or was modified \(SHA-256"),
    "not safetensors": (lambda p: p.write_bytes(b"PK\x03\x04 a zip file"), r"is not a safetensors file"),
    "another kind": (resave(kind="global_encoder"), r"is not a server state .*'global_encoder'"),
    "another config": (resave(config_hash="0" * 64), r"saved with another experiment config"),
    "bad phase": (resave(phase="warmup"), r"invalid phase/round .*'warmup' is not one of"),
    "bad round": (resave(round=7), r"invalid phase/round .*round 7 is outside 1\.\.2"),
    "round missing": (resave(round=None), r"invalid phase/round .*round None"),
    "strategy missing": (resave(strategy=None), r"no strategy state in its metadata"),
    # Hand edits of either file, swaps and torn writes: one hash covers both (checkpoint format 2).
    "round edited": (lambda p: edit_metadata(p, round=2), r"server_state\.json is corrupt or was modified"),
    "claim edited": (
        lambda p: edit_metadata(p, strategy={"claims": {"7": 10**12}}),
        r"server_state\.json is corrupt or was modified \(metadata_sha256",
    ),  # fmt: skip
    "config hash edited": (lambda p: edit_metadata(p, config_hash="0" * 64), r"server_state\.json is corrupt"),
    "metadata hash removed": (lambda p: edit_metadata(p, metadata_sha256=None), r"json has no metadata_sha256 entry"),
    "format 1": (
        lambda p: edit_metadata(p, format_version=1, metadata_sha256=None),
        r"server_state\.safetensors was written by an older endofed \(checkpoint format 1",
    ),  # fmt: skip
    "another run's tensors": (another_runs_tensors, r"server_state\.safetensors is corrupt or was modified"),
    "torn write": (torn_write, r"server_state\.safetensors is corrupt or was modified \(SHA-256 differs"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_state_is_one_config_error_naming_the_file_and_check(tmp_path, experiment, case):
    path = save_state(tmp_path, experiment)
    breaks, expected = BROKEN[case]
    breaks(path)
    with pytest.raises(ConfigError, match=expected) as info:
        check_resume_state(tmp_path, experiment)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_a_state_without_the_global_encoder_is_refused(tmp_path, experiment):
    metadata = {"kind": STATE_KIND, "phase": "pretrain", "round": 1, "config_hash": config_hash(to_dict(experiment)),
                "strategy": {}}  # fmt: skip
    save_checkpoint(tmp_path / STATE_FILE, {"m.x": torch.ones(2)}, metadata)
    with pytest.raises(ConfigError, match=r"holds no global encoder"):
        check_resume_state(tmp_path, experiment)
