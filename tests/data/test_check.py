"""Writing the passport: atomic, safe with several processes loading one site, rewritten only when it changed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import endofed.data.cache as cache_module
from endofed.config import DataConfig, load_site_config
from endofed.data.check import check_site, current_passport
from endofed.io.jsonl import write_json

CFG = DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 16))


def test_write_json_leaves_another_writers_temporary_file_alone(tmp_path):
    target = tmp_path / "passport.json"
    foreign = tmp_path / ".passport.json.tmp"  # the fixed name the old writer used, held by another process
    foreign.write_text("another writer's half-written file")
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert foreign.read_text() == "another writer's half-written file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".passport.json.tmp", "passport.json"]


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    target = tmp_path / "sub" / "passport.json"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                write_json(target, {"writer": n, "i": i, "pad": "x" * 2000})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(target.read_text())["i"] == 39  # a whole file, from one of the writers' last write
    assert [p.name for p in target.parent.iterdir()] == ["passport.json"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "passport.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["passport.json"]


def test_two_loads_of_one_site_at_once_both_succeed(example_site, monkeypatch):
    monkeypatch.setattr(cache_module, "RACY_NS", 0)
    site = load_site_config(example_site)
    check_site(site, CFG)  # the cache is filled; both loads below only read it and write the small files
    (site.work_dir / "passport.json").unlink()
    results: list[object] = []

    def load() -> None:
        try:
            results.append(check_site(site, CFG).passport["ready"])
        except BaseException as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 4


def test_passport_is_rewritten_when_its_content_changes(example_site, monkeypatch):
    monkeypatch.setattr(cache_module, "RACY_NS", 0)
    site = load_site_config(example_site)
    path: Path = site.work_dir / "passport.json"
    first = check_site(site, CFG).passport
    assert current_passport(path, {**first, "created_utc": "another time"}) == first
    edited = json.loads(path.read_text())
    edited["cases"]["total"] = 99  # an edited or stale passport is replaced by the true one
    path.write_text(json.dumps(edited))
    assert check_site(site, CFG).passport["cases"]["total"] == first["cases"]["total"]
    assert json.loads(path.read_text())["cases"]["total"] == first["cases"]["total"]
