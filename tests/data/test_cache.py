from __future__ import annotations

import dataclasses
import hashlib
import shutil

import numpy as np
import pytest

import endofed.data.site as site_module
from endofed.config import DataConfig, load_site_config
from endofed.data.cache import VolumeCache, cache_key, config_digest, file_digest
from endofed.data.check import check_site, site_cache
from endofed.data.dataset import CachedVolumes
from endofed.data.manifest import load_cases
from endofed.data.site import prepare_site

CFG = DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 16))


def test_file_digest_is_sha256(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_digest(path) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_key_depends_on_sources_and_config():
    base = cache_key("a", "b", CFG)
    assert base == cache_key("a", "b", DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 16)))
    assert base != cache_key("a", "c", CFG)
    assert base != cache_key("b", "a", CFG)  # modalities are not interchangeable
    assert base != cache_key("a", None, CFG)
    assert base != cache_key("a", "b", DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 8)))
    assert config_digest(CFG) != config_digest(DataConfig())


def test_put_get_round_trip_is_identical_and_memory_mapped(tmp_path):
    cache = VolumeCache(tmp_path)
    rng = np.random.default_rng(0)
    image = rng.random((2, 8, 6, 4), dtype=np.float32)
    mask = rng.random((2, 8, 6, 4)) > 0.5
    cache.put("ab" * 32, image, mask, {"x": 1})
    entry = cache.get("ab" * 32)
    assert isinstance(entry.image, np.memmap) and isinstance(entry.mask, np.memmap)
    np.testing.assert_array_equal(entry.image, image)
    np.testing.assert_array_equal(entry.mask.astype(bool), mask)
    assert entry.meta == {"x": 1}
    assert not [p for p in (tmp_path / "ab").iterdir() if p.name.startswith(".")]  # no temporary left


def test_cache_returns_what_preprocessing_produced(example_site):
    site = load_site_config(example_site)
    cases = load_cases(site)
    results = prepare_site(cases, CFG, site_cache(site))
    assert all(r.ok for r in results)
    dataset = CachedVolumes(site_cache(site), [r.key for r in results], [r.case.label for r in results])
    from endofed.data.nifti import load_volume
    from endofed.data.preprocess import preprocess_case

    fresh = preprocess_case(load_volume(cases[0].t1), load_volume(cases[0].t2), CFG)
    sample = dataset[0]
    np.testing.assert_array_equal(sample["image"].numpy(), fresh.image)
    np.testing.assert_array_equal(sample["mask"].numpy(), fresh.mask.astype(bool))
    assert sample["label"].item() == cases[0].label
    assert len(dataset) == len(cases)


def test_second_check_reads_the_cache_and_changes_re_preprocess(example_site, monkeypatch):
    site = load_site_config(example_site)
    cases = load_cases(site)
    calls = []
    original = site_module._preprocess_into_cache
    monkeypatch.setattr(site_module, "_preprocess_into_cache", lambda *a: calls.append(a[0].subject_id) or original(*a))
    prepare_site(cases, CFG, site_cache(site))
    assert len(calls) == len(cases)
    calls.clear()
    prepare_site(cases, CFG, site_cache(site))
    assert calls == []  # everything came from the cache
    # Changing the config re-preprocesses every case.
    prepare_site(cases, DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 8)), site_cache(site))
    assert len(calls) == len(cases)
    calls.clear()
    # Changing one source file's bytes re-preprocesses that case only.
    shutil.copyfile(cases[1].t1, cases[0].t1)
    results = prepare_site(cases, CFG, site_cache(site))
    assert calls == [cases[0].subject_id]
    assert results[1].error is not None and results[1].error.code == "duplicate_image"


def test_check_never_modifies_source_data(example_site):
    site = load_site_config(example_site)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.data_root.rglob("*") if p.is_file()}
    manifest_before = site.manifest.read_bytes()
    check_site(site, CFG)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.data_root.rglob("*") if p.is_file()}
    assert after == before
    assert site.manifest.read_bytes() == manifest_before
    assert (site.work_dir / "passport.json").is_file()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cache_dtype(example_site, dtype):
    site = load_site_config(example_site)
    cfg = DataConfig(target_spacing=(2.0, 2.0, 4.0), roi_size=(48, 48, 16), cache_dtype=dtype)
    result = prepare_site(load_cases(site)[:1], cfg, site_cache(site))[0]
    assert site_cache(site).get(result.key).image.dtype == np.dtype(dtype)


def test_input_check_limits_are_not_part_of_the_cache_key():
    from dataclasses import replace

    loose = replace(CFG, max_voxels=2**30, max_inflation=5.0, spacing_range_mm=(0.01, 50.0), fov_range_mm=(2, 3000))
    assert config_digest(loose) == config_digest(CFG)


def test_the_same_scan_re_saved_with_another_header_is_a_content_duplicate(example_site):
    import nibabel as nib

    from endofed.data.passport import build_passport

    site = load_site_config(example_site)
    cases = load_cases(site)
    original = nib.load(cases[0].t2)
    copy = nib.Nifti1Image(np.asanyarray(original.dataobj), original.affine, original.header.copy())
    copy.header["descrip"] = b"re-saved by another tool"
    nib.save(copy, cases[1].t2)
    assert file_digest(cases[1].t2) != file_digest(cases[0].t2)  # not a byte-identical file
    results = prepare_site(cases, CFG, site_cache(site))
    error = results[1].error
    assert error is not None and error.code == "duplicate_content"
    assert f"T2 {cases[1].t2} has the same voxels as a file of subject {cases[0].subject_id!r}" in str(error)
    assert all(r.ok for i, r in enumerate(results) if i != 1)
    passport = build_passport(site.site_id, results, CFG)
    assert passport["content_duplicates"] == 1 and passport["duplicates"] == 0
    # The second check takes the voxel digests from the cache and finds the same duplicate.
    again = prepare_site(cases, CFG, site_cache(site))
    assert again[1].error is not None and again[1].error.code == "duplicate_content"


def test_a_rescaled_copy_is_kept_but_reported_as_a_near_duplicate(example_site):
    import nibabel as nib

    from endofed.data.passport import build_passport

    site = load_site_config(example_site)
    cases = load_cases(site)
    original = nib.load(cases[0].t2)
    rescaled = (np.asanyarray(original.dataobj) * 2.5 + 10).astype(np.float32)  # other voxels, same picture
    copy = nib.Nifti1Image(rescaled, original.affine)
    copy.set_sform(original.affine, code=1)
    nib.save(copy, cases[2].t2)
    results = prepare_site(cases, CFG, site_cache(site))
    assert all(r.ok for r in results)  # a warning, not a failure
    flagged = [(i, r.near_duplicate) for i, r in enumerate(results) if r.near_duplicate is not None]
    assert len(flagged) == 1 and flagged[0][0] == 2
    assert f"T2 looks like the T2 of subject {cases[0].subject_id!r}" in str(flagged[0][1])
    assert build_passport(site.site_id, results, CFG)["near_duplicates"] == 1
    off = prepare_site(cases, dataclasses.replace(CFG, near_duplicate_correlation=0.0), site_cache(site))
    assert all(r.near_duplicate is None for r in off)
