from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from endofed.cli.main import main
from tests.helpers import write_nifti

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
BIN = Path(sys.executable).parent


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "work" not in p.parts}


def test_check_prints_the_passport_and_exits_zero(example_site, capsys):
    assert main(["data", "check", "--site", str(example_site), "--config", TINY, "--preview"]) == 0
    err = capsys.readouterr().err
    assert "Data passport: site example" in err and "ready to train" in err
    assert (example_site.parent / "work" / "preview.png").read_bytes()[:4] == b"\x89PNG"
    passport = json.loads((example_site.parent / "work" / "passport.json").read_text())
    assert passport["cases"]["usable"] == 6 and passport["ready"] is True


def _break_4d(site: Path) -> Path:
    path = site / "data" / "sub-003" / "T2.nii.gz"
    write_nifti(path, np.ones((8, 8, 4, 3)), np.eye(4))
    return path


def _break_zero(site: Path) -> Path:
    path = site / "data" / "sub-003" / "T1.nii.gz"
    write_nifti(path, np.zeros((8, 8, 4)), np.eye(4))
    return path


def _break_far(site: Path) -> Path:
    path = site / "data" / "sub-003" / "T1.nii.gz"
    image = nib.load(path)
    affine = image.affine.copy()
    affine[:3, 3] += [800.0, 0.0, 0.0]
    write_nifti(path, np.asarray(image.dataobj), affine)
    return path


def _break_truncate(site: Path) -> Path:
    path = site / "data" / "sub-003" / "T2.nii.gz"
    path.write_bytes(path.read_bytes()[:300])
    return path


def _break_missing(site: Path) -> Path:
    path = site / "data" / "sub-003" / "T1.nii.gz"
    path.unlink()
    return path


@pytest.mark.parametrize(
    ("breaker", "reason", "code"),
    [
        (_break_4d, "expected a 3D volume", "not_3d"),
        (_break_zero, "volume is all zero", "all_zero"),
        (_break_far, "T1 and T2 do not overlap in world coordinates", "no_overlap"),
        (_break_truncate, "corrupt or truncated", "unreadable"),
        (_break_missing, "missing file", "missing_file"),
    ],
)
def test_check_reports_a_bad_case_and_exits_non_zero(example_site, capsys, breaker, reason, code):
    path = breaker(example_site.parent)
    before = _snapshot(example_site.parent)
    assert main(["data", "check", "--site", str(example_site), "--config", TINY]) == 1
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.strip().startswith("sub-003:"))
    assert reason in line and str(path) in line
    assert "Traceback" not in err
    assert _snapshot(example_site.parent) == before
    passport = json.loads((example_site.parent / "work" / "passport.json").read_text())
    assert passport["failures"] == {code: 1} and passport["ready"] is False
    # --allow-failures: the bad case is left out and training may proceed.
    assert main(["data", "check", "--site", str(example_site), "--config", TINY, "--allow-failures"]) == 0


def _edit(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: _edit(s, "site_id: x\nmanifest: [1\n"), "malformed YAML in"),
        (lambda s: _edit(s, "site_id: x\nmanifset: manifest.csv\n"), "did you mean 'manifest'?"),
        (
            lambda s: _edit(s.parent / "manifest.csv", "subject_id,t1,t2,label\na,x,y,5\n"),
            "label must be 0, 1 or blank, got '5'",
        ),
        (
            lambda s: _edit(s.parent / "manifest.csv", "subject_id,t1,t2,label\na,x,y,0\na,x,y,1\n"),
            "duplicate subject_id 'a'",
        ),
        (lambda s: _edit(s.parent / "manifest.csv", "id,t1,t2\n"), "malformed CSV manifest"),
        (lambda s: s.unlink(), "config file not found"),
    ],
)
def test_bad_site_inputs_give_one_line_and_exit_one(example_site, capsys, mutate, message):
    mutate(example_site)
    assert main(["data", "check", "--site", str(example_site), "--config", TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("endofed: error:") and message in err
    assert len(err.splitlines()) == 1


def test_unknown_config_key_via_cli(example_site, capsys):
    code = main(["data", "check", "--site", str(example_site), "--set", "data.roi_siz=[8,8,8]"])
    assert code == 1
    assert "unknown config key 'data.roi_siz' (did you mean 'roi_size'?)" in capsys.readouterr().err


def test_missing_modality_only_if_config_allows(example_site, capsys):
    manifest = example_site.parent / "manifest.csv"
    lines = manifest.read_text().splitlines()
    first = lines[1].split(",")
    lines[1] = ",".join([first[0], "", first[2], first[3]])
    manifest.write_text("\n".join(lines) + "\n")
    assert main(["data", "check", "--site", str(example_site), "--config", TINY]) == 1
    assert "T1 is missing (set data.allow_missing_modality: true to accept)" in capsys.readouterr().err
    args = ["data", "check", "--site", str(example_site), "--config", TINY, "--set", "data.allow_missing_modality=true"]
    assert main(args) == 0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.integration  # runs the installed endofed-* commands
def test_installed_entry_points_help_and_usage_errors(tmp_path):
    for command in ("endofed", "endofed-server", "endofed-client", "endofed-sim"):
        assert _run(command, "--help").returncode == 0
    assert _run("endofed").returncode == 2
    for command in ("endofed-client", "endofed-sim"):  # a required argument is missing
        result = _run(command)
        assert result.returncode == 2 and "required" in result.stderr
    missing = _run("endofed-server", "--config", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 1 and missing.stderr.startswith("endofed: error: config file not found")
    assert "Traceback" not in missing.stderr


@pytest.mark.integration  # runs the installed endofed-* commands
def test_convert_cli_refuses_missing_slice_without_traceback(tmp_path):
    from tests.data.test_dicom import write_series

    write_series(tmp_path / "dicom", "T2 TSE", 3, drop=2)
    result = _run("endofed", "data", "convert", str(tmp_path / "dicom"), str(tmp_path / "out"))
    assert result.returncode == 1
    assert "FAIL  'T2 TSE' (7 files): slice positions are not evenly spaced" in result.stderr
    assert "Traceback" not in result.stderr
    result = _run("endofed", "data", "convert", str(tmp_path / "nothing"), str(tmp_path / "out"))
    assert result.returncode == 1 and result.stderr.startswith("endofed: error: DICOM folder not found")


@pytest.mark.integration  # runs the installed endofed-* commands
def test_example_then_check_end_to_end(tmp_path):
    result = _run("endofed", "data", "example", "--out", str(tmp_path / "ex"), "--subjects", "3", "--in-plane", "1.5")
    assert result.returncode == 0, result.stderr
    site_yaml = result.stdout.strip()
    check = _run("endofed", "data", "check", "--site", site_yaml, "--config", TINY)
    assert check.returncode == 0, check.stderr
    assert "3 total, 3 usable, 0 failed" in check.stderr
    again = _run("endofed", "data", "example", "--out", str(tmp_path / "ex"))
    assert again.returncode == 1 and "already exists" in again.stderr
