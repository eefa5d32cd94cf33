from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from endofed.cli.main import main
from endofed.synth.anatomy import POSITIVE_FINDINGS, F
from endofed.synth.cohort import draw_subject, generate
from endofed.synth.profile import CohortProfile, load_preset

BIN = Path(sys.executable).parent


def test_positives_carry_a_sign_and_mimics_ignore_the_label():
    cohort = CohortProfile(prevalence=0.5, label_noise=0.0, labelled_fraction=1.0)
    specs = [draw_subject(np.random.default_rng([3, i]), cohort, f"s{i}") for i in range(600)]
    for spec in specs:
        has_sign = any(f in POSITIVE_FINDINGS for f in spec.findings)
        assert has_sign == bool(spec.label) and spec.observed == spec.label
    mimic_rate = {
        label: Counter(f for s in specs if s.label == label for f in set(s.findings) if f not in POSITIVE_FINDINGS)
        for label in (0, 1)
    }
    n = Counter(s.label for s in specs)
    for mimic in (F.SIMPLE_CYST, F.FIBROID):  # same prevalence in both classes (within sampling noise)
        assert abs(mimic_rate[0][mimic] / n[0] - mimic_rate[1][mimic] / n[1]) < 0.1


def test_label_noise_and_unlabelled_fraction():
    cohort = CohortProfile(prevalence=0.5, label_noise=0.2, labelled_fraction=0.5)
    specs = [draw_subject(np.random.default_rng([4, i]), cohort, f"s{i}") for i in range(1000)]
    labelled = [s for s in specs if s.observed is not None]
    assert 0.45 < len(labelled) / len(specs) < 0.55
    flipped = sum(s.observed != s.label for s in labelled) / len(labelled)
    assert 0.16 < flipped < 0.24


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*.nii.gz"))
    return hashlib.sha256(b"".join(np.asarray(nib.load(p).dataobj).tobytes() for p in files)).hexdigest()


def test_same_seed_same_voxels_and_other_seed_differs(tmp_path):
    sites = load_preset("tiny")[:1]
    generate(sites, tmp_path / "a", "tiny", seed=5)
    generate(sites, tmp_path / "b", "tiny", seed=5)
    generate(sites, tmp_path / "c", "tiny", seed=6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


@pytest.mark.integration  # runs the installed endofed command
def test_synth_cli_writes_sites_that_pass_data_check(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["synth", "--preset", "tiny", "--out", str(out), "--seed", "1"]) == 0
    site_yamls = capsys.readouterr().out.split()
    assert [Path(p).name for p in site_yamls] == ["site_alpha.yaml", "site_beta.yaml"]
    for site_yaml in site_yamls:
        assert main(["data", "check", "--site", site_yaml, "--config", "configs/tiny.yaml"]) == 0
    alpha = out / "alpha"
    with (alpha / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and all("truth" not in row["t1"] + row["t2"] for row in rows)
    t2 = nib.load(alpha / "data" / rows[0]["subject_id"] / "T2.nii.gz")
    assert nib.aff2axcodes(t2.affine) == ("P", "S", "R") and t2.get_data_dtype() == np.int16
    assert t2.header.get_zooms()[:3] == (1.5, 1.5, 4.4)  # tiny: 0.7 mm -> 1.5 mm in-plane; 4 mm + 0.4 gap
    with (alpha / "truth" / "subjects.csv").open() as handle:
        truth = list(csv.DictReader(handle))
    assert {row["subject_id"] for row in truth} == {row["subject_id"] for row in rows}
    assert all(isinstance(json.loads(row["findings"]), list) for row in truth)
    # Never overwrites: a second run into the same folder is refused with one line.
    result = subprocess.run(
        [str(BIN / "endofed"), "synth", "--preset", "tiny", "--out", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 1 and result.stderr.startswith("endofed: error: output already exists")


def test_bilateral_endometriomas_sit_on_both_ovaries():
    from endofed.synth.cohort import SubjectSpec, build_scene

    for seed in range(5):
        spec = SubjectSpec("s", 1, 1, (F.ENDOMETRIOMA, F.ENDOMETRIOMA))
        _, records = build_scene(spec, CohortProfile(), np.random.default_rng(seed))
        assert sorted(r["site"] for r in records) == ["left_ovary", "right_ovary"]


def test_test_subjects_are_extra_labelled_and_fixed_in_the_manifest(tmp_path):
    from endofed.config import load_site_config
    from endofed.data.manifest import load_cases
    from endofed.synth.profile import SiteProfile

    base = SiteProfile(name="s", cohort=CohortProfile(subjects=3, labelled_fraction=0.0))
    with_test = SiteProfile(name="s", cohort=CohortProfile(subjects=3, labelled_fraction=0.0, test_subjects=4))
    (plain_yaml,) = generate([base], tmp_path / "plain", "tiny", seed=1)
    (test_yaml,) = generate([with_test], tmp_path / "test", "tiny", seed=1)
    cases = {c.subject_id: c for c in load_cases(load_site_config(test_yaml))}
    assert sorted(cases) == [f"s-{i:04d}" for i in range(1, 8)]
    test = [c for c in cases.values() if c.split == "test"]
    assert sorted(c.subject_id for c in test) == ["s-0004", "s-0005", "s-0006", "s-0007"]
    assert all(c.label in (0, 1) for c in test)  # always labelled, whatever labelled_fraction says
    assert all(cases[f"s-000{i}"].split == "train" and cases[f"s-000{i}"].label is None for i in (1, 2, 3))
    # Adding test subjects leaves the development subjects untouched (same voxels, same labels).
    plain = {c.subject_id: c for c in load_cases(load_site_config(plain_yaml))}
    assert all(c.split is None for c in plain.values())
    for subject, case in plain.items():
        for modality in ("t1", "t2"):
            a, b = getattr(case, modality), getattr(cases[subject], modality)
            assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
        assert case.label == cases[subject].label
