"""A round committed after the reply: readers wait for it, a failed one keeps the store as it was, and says so."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

import endofed.training.site_state as site_state
from endofed.federated.site_errors import StateNotFinite
from endofed.training.commits import LOCK_FILE, PendingCommit, acquire, reading, release
from endofed.training.site_state import RoundStore

WAIT_S = 30  # generous: a thread that should be blocked is checked well within this


def _tensors(value: float) -> dict[str, torch.Tensor]:
    return {"local.w": torch.full((3,), value), "optim.state.0.step": torch.tensor(value)}


def _read(tensors, meta):
    return float(tensors["local.w"][0])


def _save_later(store: RoundStore, server_round: int, base: int | None) -> PendingCommit:
    return store.save_later(("pretrain", server_round, 5), _tensors(server_round), {"optimizer": {}},
                            {"w": np.full(2, server_round, np.float32)}, base)  # fmt: skip


def _held_checkpoints(monkeypatch) -> threading.Event:
    """Make every checkpoint write wait until the returned event is set (a slow disk, under control)."""
    gate, original = threading.Event(), site_state.save_checkpoint

    def slow(*args, **kwargs):
        assert gate.wait(WAIT_S), "the test never released the write"
        return original(*args, **kwargs)

    monkeypatch.setattr(site_state, "save_checkpoint", slow)
    return gate


def test_a_reader_that_starts_during_a_deferred_commit_waits_for_it_and_sees_the_new_round(tmp_path, monkeypatch):
    store = RoundStore(tmp_path / "mae")
    _save_later(store, 1, None).wait()
    gate = _held_checkpoints(monkeypatch)
    pending = _save_later(store, 2, 1)  # returns at once: the files are written by its thread
    results: dict[str, object] = {}
    readers = [
        threading.Thread(target=lambda: results.update(load=store.load(None, _read))),
        threading.Thread(target=lambda: results.update(known=store.last_global())),
    ]
    for reader in readers:
        reader.start()
    readers[0].join(0.3)
    assert readers[0].is_alive() and not results  # blocked on the lock, not reading round 1
    gate.set()
    assert pending.wait() == store.folder / "round-0002" and pending.error is None
    for reader in readers:
        reader.join(WAIT_S)
    assert results["load"] == (2, 2.0)
    assert results["known"].server_round == 2 and results["known"].arrays["w"].tolist() == [2.0, 2.0]
    assert store.rounds() == [1, 2]


def test_deferred_commits_of_one_store_run_one_after_the_other(tmp_path):
    store = RoundStore(tmp_path / "mae")
    first = _save_later(store, 1, None)
    second = _save_later(store, 2, 1)  # waits for the first's lock before its thread starts
    assert first.result is not None  # the first had ended when the second took the lock
    second.wait()
    assert store.rounds() == [1, 2] and store.load(None, _read) == (2, 2.0)


def test_a_deferred_commit_that_fails_leaves_the_store_as_it_was_with_one_error_line(tmp_path, monkeypatch, caplog):
    store = RoundStore(tmp_path / "mae")
    _save_later(store, 1, None).wait()

    def full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(site_state, "save_checkpoint", full_disk)
    with caplog.at_level(logging.INFO, logger="endofed.training.commits"):
        pending = _save_later(store, 2, 1)
        assert pending.wait() is None
    assert isinstance(pending.error, OSError)
    (line,) = caplog.records
    message = line.getMessage()
    assert line.levelno == logging.ERROR and "pretrain round 2 was not committed" in message
    assert "No space left on device" in message and message.endswith("continues from the round before")
    assert store.rounds() == [1] and store.load(None, _read) == (1, 1.0)
    monkeypatch.undo()  # the disk has room again: the lock was released, the next commit goes through
    store.save(("pretrain", 3, 5), _tensors(3), {"optimizer": {}}, {"w": np.zeros(2, np.float32)}, base=1)
    assert store.rounds() == [1, 3]
    assert not [p.name for p in store.folder.iterdir() if p.name.startswith(".")]  # round 2's partial is gone


def test_a_non_finite_round_is_refused_before_the_reply_not_in_the_background(tmp_path):
    store = RoundStore(tmp_path / "mae")
    with pytest.raises(StateNotFinite, match="local state"):
        store.save_later(("pretrain", 1, 5), _tensors(float("nan")), {"optimizer": {}},
                         {"w": np.zeros(2, np.float32)}, None)  # fmt: skip
    assert not store.folder.exists() or store.rounds() == []


def test_the_lock_excludes_a_reader_until_the_writer_releases_it(tmp_path):
    folder = tmp_path / "store"
    handle = acquire(folder, exclusive=True)
    assert (folder / LOCK_FILE).is_file()
    entered = threading.Event()

    def read() -> None:
        with reading(folder):
            entered.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert not entered.wait(0.3)
    release(handle)
    assert entered.wait(WAIT_S)
    reader.join(WAIT_S)


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path):
    with reading(tmp_path / "none"):
        pass
    assert not (tmp_path / "none").exists()
