"""The wheel installs the ``endofed`` library only: ``server``/``client`` travel in the Flower app bundle."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration  # pip builds the wheel in a subprocess
def test_wheel_has_no_top_level_server_or_client(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("endofed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert "endofed" in top_level
    assert "endofed/config.py" in names and "endofed/data/preprocess.py" in names
    assert not top_level & {"server", "client", "tests", "benchmarks", "configs", "deploy"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("endofed =", "endofed-server =", "endofed-client =", "endofed-sim ="):
        assert script in text


def test_dependency_ranges_admit_the_supported_torch_builds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_spec = next(d for d in project["dependencies"] if d.startswith("torch"))
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(torch_spec.removeprefix("torch"))
    assert "2.11.0" in spec and "2.13.0" in spec
    flwr_spec = SpecifierSet(next(d for d in project["dependencies"] if d.startswith("flwr")).split("]")[1])
    assert "1.42.0" in flwr_spec and "1.43.0" not in flwr_spec  # pinned to the minor version the tests run


def test_flower_app_bundle_ships_only_the_app():
    """The FAB every site receives: role packages, library, experiment configs; no tests, benchmarks or data."""
    import io

    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(ROOT)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level <= {".info", "LICENSE", "README.md", "pyproject.toml", "server", "client", "endofed", "configs"}
    assert {"server/app.py", "client/app.py", "endofed/training/federated_site.py"} <= set(names)
    assert not [n for n in names if n.startswith("configs/sites/")]
    assert len(fab) < 10 * 1024 * 1024  # Flower's limit
