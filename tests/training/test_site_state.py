"""The site's own state on disk and its checks on a received encoder, by hand: bounds, rounds kept, torn states."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from endofed.federated.site_errors import GlobalRefused, StateNotFinite
from endofed.io.checkpoint import metadata_path, save_checkpoint
from endofed.training.commits import LOCK_FILE
from endofed.training.received_checks import (
    MAX_CHANGE_PER_ROUND,
    check_received,
    dp_allowance,
    max_change_ratio,
    rounds_apart,
)
from endofed.training.site_state import (
    GLOBAL_FILE,
    KILL_ENV,
    RoundStore,
    fault_point,
    parse_round_folder,
    round_folder_name,
    rounds_to_drop,
)

EXPECTED = {"w": (2,), "b": (1,)}
REFERENCE = {"w": np.array([3.0, 4.0], np.float32), "b": np.array([0.0], np.float32)}  # norm 5


def test_check_received_by_hand():
    moved = {"w": np.array([3.0, 4.0], np.float32), "b": np.array([3.0], np.float32)}  # 3 away from a norm of 5
    assert check_received(moved, EXPECTED, REFERENCE, max_ratio=1.0) == pytest.approx(0.6)
    with pytest.raises(GlobalRefused, match=r"0.6 x the last known global's norm away \(bound 0.5\)"):
        check_received(moved, EXPECTED, REFERENCE, max_ratio=0.5)
    assert check_received({k: torch.from_numpy(v) for k, v in moved.items()}, EXPECTED) is None  # round 1: no bound
    bad = {
        "NaN or Inf": {**moved, "b": np.array([np.nan], np.float32)},
        "is float64": {**moved, "w": moved["w"].astype(np.float64)},
        r"expected float32 \(2,\)": {**moved, "w": np.zeros(3, np.float32)},
        r"keys differ from the model's: missing \['b'\]": {"w": moved["w"]},
    }
    for reason, received in bad.items():
        with pytest.raises(GlobalRefused, match=reason):
            check_received(received, EXPECTED, REFERENCE, max_ratio=1.0)
    with pytest.raises(GlobalRefused, match=r"1e\+36 x"):  # a coordinator scaling the weights by 1e36
        check_received({k: v * np.float32(1e36) for k, v in REFERENCE.items()}, EXPECTED, REFERENCE, max_ratio=1.0)


@pytest.mark.parametrize(
    ("reference", "phase", "server_round", "apart"),
    [
        (("pretrain", 3, 10), "pretrain", 4, 1),  # the next round
        (("pretrain", 4, 10), "pretrain", 4, 1),  # a repeated round: the same global again, bound of one round
        (("pretrain", 2, 10), "pretrain", 7, 5),  # the site was away for rounds 3-6
        (("pretrain", 9, 10), "finetune", 2, 3),  # pre-training round 10, then fine-tuning rounds 1 and 2
        (("finetune", 3, 5), "finetune", None, 3),  # an evaluation: at most the rest of the phase (rounds 3-5)
    ],
)
def test_rounds_apart_by_hand(reference, phase, server_round, apart):
    assert rounds_apart(reference, phase, server_round) == apart
    assert max_change_ratio(apart) == MAX_CHANGE_PER_ROUND * apart


@pytest.mark.parametrize(
    ("saved", "written", "base", "dropped"),
    [
        ([1, 2, 3], 3, 2, [1]),  # keep the new round and the one it continued from
        ([2, 3], 3, 2, []),  # a repeated round 3
        ([1, 2, 3, 5], 3, 2, [1, 5]),  # the server went back to round 3: round 5 is an abandoned future
        ([3, 4, 5], 5, 3, [4]),  # round 4 could not be read, round 5 continued from 3
        ([1, 2], 1, None, [2]),  # round 1 again, from the initial weights
    ],
)
def test_rounds_to_drop_by_hand(saved, written, base, dropped):
    assert rounds_to_drop(saved, written, base) == dropped


def test_round_folder_names():
    assert round_folder_name(4) == "round-0004" and parse_round_folder("round-0004") == 4
    assert parse_round_folder(".partial-round-0004-123") is None and parse_round_folder("round-x") is None


def test_fault_point_is_a_no_op_unless_armed_for_that_step(monkeypatch):
    fault_point("state-written")
    monkeypatch.setenv(KILL_ENV, "pruned")
    fault_point("state-written")  # still alive


def _tensors(value: float) -> dict[str, torch.Tensor]:
    return {"local.w": torch.full((3,), value), "optim.state.0.step": torch.tensor(value)}


def _read(tensors, meta):
    if "optimizer" not in meta:
        raise ValueError("no optimizer metadata")
    return float(tensors["local.w"][0])


def _store(tmp_path, rounds=(1, 2, 3)) -> RoundStore:
    store = RoundStore(tmp_path / "mae")
    base = None
    for server_round in rounds:
        store.save(("pretrain", server_round, 5), _tensors(server_round), {"optimizer": {}},
                   {"w": np.full(2, server_round, np.float32)}, base)  # fmt: skip
        base = server_round
    return store


def test_a_round_is_saved_with_the_one_it_continued_from_and_read_back(tmp_path):
    store = _store(tmp_path)
    assert store.rounds() == [2, 3]
    assert store.load(4, _read) == (3, 3.0) and store.load(3, _read) == (2, 2.0) and store.load(None, _read)[0] == 3
    assert store.load(1, _read) is None  # round 1 starts from the initial weights
    known = store.last_global()
    assert (known.phase, known.server_round, known.total_rounds) == ("pretrain", 3, 5)
    assert known.arrays["w"].tolist() == [3.0, 3.0]
    assert sorted(p.name for p in store.folder.iterdir()) == [LOCK_FILE, "round-0002", "round-0003"]


@pytest.mark.parametrize(
    "damage", ["empty tensor file", "no metadata", "no tensor file", "NaN on disk", "no optimizer"]
)
def test_a_torn_round_falls_back_to_the_one_before_with_one_log_line(damage, tmp_path, caplog):
    store = _store(tmp_path)
    state = store.round_path(3)
    if damage == "empty tensor file":
        state.write_bytes(b"")
    elif damage == "no metadata":
        metadata_path(state).unlink()
    elif damage == "no tensor file":
        state.unlink()
    elif damage == "NaN on disk":
        save_checkpoint(state, _tensors(float("nan")), {"optimizer": {}}, content_hash=False)
    else:
        save_checkpoint(state, _tensors(3.0), {"round": 3}, content_hash=False)
    with caplog.at_level(logging.INFO, logger="endofed.training.site_state"):
        assert store.load(4, _read) == (2, 2.0)
    (line,) = caplog.records
    assert line.levelno == logging.WARNING and "round 3" in line.getMessage()
    assert line.getMessage().endswith("continuing from round 2")
    # The next round continued from round 2 keeps round 2, drops the torn round 3.
    store.save(("pretrain", 4, 5), _tensors(4), {"optimizer": {}}, {"w": np.zeros(2, np.float32)}, base=2)
    assert store.rounds() == [2, 4]


def test_nothing_readable_starts_from_the_initial_weights_with_one_log_line(tmp_path, caplog):
    store = _store(tmp_path, rounds=(1, 2))
    for server_round in (1, 2):
        store.round_path(server_round).write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="endofed.training.site_state"):
        assert store.load(3, _read) is None
    (line,) = caplog.records
    assert "round 2" in line.getMessage() and "round 1" in line.getMessage()
    assert line.getMessage().endswith("starting from the initial weights")


def test_a_left_over_partial_folder_is_ignored_and_removed_by_the_next_save(tmp_path, caplog):
    store = _store(tmp_path, rounds=(1, 2))
    partial = store.folder / ".partial-round-0003-999"  # a process killed before its rename
    save_checkpoint(partial / "state.safetensors", _tensors(3), {"optimizer": {}}, content_hash=False)
    trash = store.folder / ".trash-round-0001-999-abcd"  # killed while dropping an old round
    trash.mkdir()
    with caplog.at_level(logging.WARNING):
        assert store.rounds() == [1, 2] and store.load(3, _read) == (2, 2.0)
    assert not caplog.records  # nothing was torn: no warning
    store.save(("pretrain", 3, 5), _tensors(3), {"optimizer": {}}, {"w": np.zeros(2, np.float32)}, base=2)
    assert sorted(p.name for p in store.folder.iterdir()) == [LOCK_FILE, "round-0002", "round-0003"]


def test_a_non_finite_tensor_is_never_written(tmp_path):
    store = _store(tmp_path, rounds=(1, 2))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(StateNotFinite, match=r"local state: 'local.w' contains NaN or Inf"):
        store.save(("pretrain", 3, 5), _tensors(float("nan")), {"optimizer": {}}, {"w": np.zeros(2, np.float32)}, 2)
    with pytest.raises(StateNotFinite, match="received encoder"):
        store.save(("pretrain", 3, 5), _tensors(3), {"optimizer": {}}, {"w": np.full(2, np.inf, np.float32)}, 2)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_torn_global_is_passed_over_for_an_older_one(tmp_path):
    store = _store(tmp_path)
    store.round_path(3, GLOBAL_FILE).write_bytes(b"")
    assert store.last_global().server_round == 2


def test_a_global_that_lost_its_content_is_passed_over_by_its_digest(tmp_path):
    """The received encoder is not flushed to disk: after a power cut it may read back as zeros of the right size."""
    store = _store(tmp_path)
    path = store.round_path(3, GLOBAL_FILE)
    meta = metadata_path(path).read_text()
    save_checkpoint(path, {"w": torch.zeros(2)}, {}, content_hash=False)  # zeros where all-3 was written
    metadata_path(path).write_text(meta)  # its metadata (and recorded digest) as written in round 3
    known = store.last_global()
    assert known.server_round == 2 and known.arrays["w"].tolist() == [2.0, 2.0]


def test_the_state_is_flushed_to_disk_before_its_round_is_committed_the_received_encoder_is_not(tmp_path, monkeypatch):
    store, flushed = _store(tmp_path, rounds=(1,)), []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    store.save(("pretrain", 2, 5), _tensors(2), {"optimizer": {}}, {"w": np.full(2, 2.0, np.float32)}, 1)
    names = [Path(f).name for f in flushed]
    assert any(n.startswith(".state.safetensors.") for n in names)  # the temporary file, before its rename
    assert not any(n.startswith(".global.safetensors.") for n in names)
    assert store.last_global().arrays["w"].tolist() == [2.0, 2.0]


def test_a_hashed_state_is_not_flushed_and_one_that_lost_its_content_is_passed_over(tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    store = RoundStore(tmp_path / "mae", hashed=True)
    for server_round, base in ((1, None), (2, 1)):
        store.save(("pretrain", server_round, 5), _tensors(server_round), {"optimizer": {}},
                   {"w": np.full(2, server_round, np.float32)}, base)  # fmt: skip
    assert flushed == []  # its hash is checked when read: nothing is flushed
    path = store.round_path(2)
    meta = metadata_path(path).read_text()
    save_checkpoint(path, _tensors(0), {"optimizer": {}}, content_hash=False)  # zeros where round 2 was written
    metadata_path(path).write_text(meta)
    assert store.load(3, _read) == (1, 1.0)  # round 2 fails its hash: round 1's state is used


def test_a_kept_global_is_found_by_its_digest_the_int8_down_links_base(tmp_path):
    from endofed.federated.downlink import state_digest

    store = _store(tmp_path)  # rounds 2 and 3 kept, their globals all-2 and all-3
    two, three = ({"w": np.full(2, v, np.float32)} for v in (2.0, 3.0))
    assert store.global_with_digest(state_digest(two)).arrays["w"].tolist() == [2.0, 2.0]  # the older kept round too
    assert store.global_with_digest(state_digest(three)).arrays["w"].tolist() == [3.0, 3.0]
    assert store.global_with_digest(state_digest({"w": np.full(2, 1.0, np.float32)})) is None  # pruned round 1
    store.save(("pretrain", 4, 5), _tensors(4), {"optimizer": {}}, {"w": np.full(2, 4.0, np.float32)}, 3,
               digest="given-by-the-caller")  # fmt: skip
    assert store.global_with_digest("given-by-the-caller").arrays["w"].tolist() == [4.0, 4.0]  # not hashed again
    store.round_path(3, GLOBAL_FILE).write_bytes(b"")  # a torn global is no base
    assert store.global_with_digest(state_digest(three)) is None


def test_dp_allowance_by_hand():
    # z = 1, C = 0.5, 2 sites, 10 000 values: the clipped mean moves <= 0.5, the noise (std 0.25) <= 0.25 x 110
    assert dp_allowance(1.0, 0.5, 2, 10_000) == pytest.approx(0.5 + 0.25 * (100 + 10))
    assert dp_allowance(0.0, 0.5, 2, 10_000) == 0.0  # no DP: nothing added
    assert max_change_ratio(3, dp_allowance_ratio=2.0) == pytest.approx((MAX_CHANGE_PER_ROUND + 2.0) * 3)


def test_a_real_dp_release_stays_within_the_allowance():
    from endofed.federated.privacy import noise_std, private_average

    base = {"w": np.zeros(40_000, np.float32)}
    updates = [{"w": np.full(40_000, 0.5 / 200, np.float32)} for _ in range(3)]  # each of norm 0.5 = C
    released = private_average(base, updates, 3, noise_std(1.1, 0.5, 3), np.random.default_rng(0))
    moved = float(np.linalg.norm(released["w"].astype(np.float64)))
    assert 0.5 < moved <= dp_allowance(1.1, 0.5, 3, 40_000)  # beyond the clipped mean alone, within the bound
