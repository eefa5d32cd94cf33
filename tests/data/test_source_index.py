"""The stat-based fast path of a site's start-up check: unchanged sources are not read, any change is.

Each test counts the calls of the hash function (``endofed.data.cache.file_digest``) during ``check_site``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import endofed.data.cache as cache_module
import endofed.data.site as site_module
from endofed.config import DataConfig, SiteConfig, load_site_config
from endofed.data.cache import SOURCE_INDEX, FileStamp, SourceIndex
from endofed.data.check import check_site, site_cache

CFG = DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 16))


@pytest.fixture()
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths hashed so far (every read of a source file's bytes for its digest)."""
    calls: list[Path] = []
    original = cache_module.file_digest

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return original(path)

    monkeypatch.setattr(cache_module, "file_digest", counting)
    monkeypatch.setattr(site_module, "file_digest", counting)
    return calls


@pytest.fixture()
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by the fixture a moment ago count as settled (no racy-timestamp re-hash)."""
    monkeypatch.setattr(cache_module, "RACY_NS", 0)


def _sources(site: SiteConfig) -> list[Path]:
    return sorted(p for p in site.data_root.rglob("*.nii.gz"))


def _gzip_variant(path: Path) -> bytes:
    """Other bytes of the same size and the same image: the gzip header's MTIME field changed."""
    data = bytearray(path.read_bytes())
    data[4] = (data[4] + 1) % 256
    return bytes(data)


def _keys(site: SiteConfig) -> dict[str, str | None]:
    return {r.case.subject_id: r.key for r in check_site(site, CFG).results}


def test_second_start_with_unchanged_files_hashes_nothing(example_site, hashed, settled):
    site = load_site_config(example_site)
    first = check_site(site, CFG)
    assert sorted(hashed) == _sources(site)  # first start: every file read once (no double hash on a cache miss)
    hashed.clear()
    passport = site.work_dir / "passport.json"
    written = (passport.read_bytes(), passport.stat().st_mtime_ns)
    second = check_site(site, CFG)
    assert hashed == []
    assert [r.key for r in second.results] == [r.key for r in first.results]
    assert second.passport == first.passport  # identical content, creation time included: the file was kept
    assert (passport.read_bytes(), passport.stat().st_mtime_ns) == written


def test_data_check_always_hashes_every_file(example_site, hashed, settled):
    site = load_site_config(example_site)
    check_site(site, CFG)
    hashed.clear()
    full = check_site(site, CFG, full=True)
    assert sorted(hashed) == _sources(site)
    assert full.passport["ready"]


def test_touched_file_is_hashed_again(example_site, hashed, settled):
    site = load_site_config(example_site)
    before = _keys(site)
    path = _sources(site)[0]
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    hashed.clear()
    assert _keys(site) == before  # same bytes, same key: still a cache hit
    assert hashed == [path]


def test_file_rewritten_in_place_with_its_mtime_restored_is_detected(example_site, hashed, settled):
    site = load_site_config(example_site)
    before = _keys(site)
    path = next(p for p in _sources(site) if p.parent.name == "sub-001")
    st = path.stat()
    path.write_bytes(_gzip_variant(path))  # as `touch -r` after an edit: size and mtime as before
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    hashed.clear()
    after = _keys(site)
    assert path in hashed
    assert after["sub-001"] != before["sub-001"]
    assert {s: k for s, k in after.items() if s != "sub-001"} == {s: k for s, k in before.items() if s != "sub-001"}


def test_file_replaced_by_one_of_the_same_size_and_mtime_is_detected(example_site, hashed, settled):
    site = load_site_config(example_site)
    before = _keys(site)
    path = next(p for p in _sources(site) if p.parent.name == "sub-002")
    old = FileStamp.of(path)
    replacement = path.with_name(".replacement")
    replacement.write_bytes(_gzip_variant(path))
    os.utime(replacement, ns=(old.mtime_ns, old.mtime_ns))
    os.replace(replacement, path)  # what rsync or a re-export does: a new file renamed over the old one
    new = FileStamp.of(path)
    assert (new.size, new.mtime_ns) == (old.size, old.mtime_ns) and new.inode != old.inode
    hashed.clear()
    assert _keys(site)["sub-002"] != before["sub-002"]
    assert path in hashed


def test_a_file_changed_just_before_it_was_hashed_is_hashed_again(example_site, hashed):
    """Racy timestamps: a change in the same clock tick as the hash would leave the stat unchanged."""
    site = load_site_config(example_site)
    path = _sources(site)[0]
    path.write_bytes(path.read_bytes())  # changed now (ctime = now)
    check_site(site, CFG)
    hashed.clear()
    check_site(site, CFG)
    assert path in hashed


def test_a_cache_miss_hashes_the_files_before_preprocessing(example_site, hashed, settled):
    site = load_site_config(example_site)
    first = check_site(site, CFG).results[0]
    shutil.rmtree(site_cache(site).path(str(first.key)))
    hashed.clear()
    again = check_site(site, CFG).results[0]
    assert sorted(hashed) == sorted(p for p in (first.case.t1, first.case.t2) if p is not None)
    assert again.key == first.key and site_cache(site).contains(str(again.key))


def test_index_is_site_local_and_the_passport_holds_no_stat(example_site, settled):
    site = load_site_config(example_site)
    check = check_site(site, CFG)
    index = json.loads((site.work_dir / "cache" / SOURCE_INDEX).read_text())
    assert set(index["files"]) == {str(p) for p in _sources(site)}
    assert set(next(iter(index["files"].values()))) >= {"size", "mtime_ns", "ctime_ns", "inode", "sha256"}
    text = json.dumps(check.passport)
    assert str(site.data_root) not in text and "inode" not in text and "sub-001" not in text


def test_index_forgets_files_no_longer_used_and_survives_corruption(tmp_path, settled):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    index = SourceIndex(tmp_path / "sources.json")
    index.hash(a)
    index.hash(b)
    index.save()
    reopened = SourceIndex(tmp_path / "sources.json")
    assert reopened.lookup(a) is not None
    reopened.save()  # only a was used
    assert set(json.loads((tmp_path / "sources.json").read_text())["files"]) == {str(a)}
    (tmp_path / "sources.json").write_text("{not json")
    assert SourceIndex(tmp_path / "sources.json").lookup(a) is None


def test_check_never_modifies_source_data(example_site, settled):
    site = load_site_config(example_site)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.data_root.rglob("*") if p.is_file()}
    check_site(site, CFG)
    check_site(site, CFG)
    check_site(site, CFG, full=True)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.data_root.rglob("*") if p.is_file()} == before
