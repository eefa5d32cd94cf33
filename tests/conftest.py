"""Shared fixtures: NIfTI writers with known affines, and a generated example site."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from endofed.data.example import write_example_site

ROOT = Path(__file__).resolve().parents[1]
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, dtype: type = np.int16) -> Path:
    """Save ``array`` as NIfTI-1 with the same sform and qform; returns ``path``."""
    image = nib.Nifti1Image(np.asarray(array).astype(dtype), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def world_grid(affine: np.ndarray, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """World x, y, z (mm) of every voxel centre of a grid."""
    ijk = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    return [sum(affine[r, c] * ijk[c] for c in range(3)) + affine[r, 3] for r in range(3)]


def sphere_volume(
    affine: np.ndarray, shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float
) -> np.ndarray:
    """A bright sphere (1000) on a dim background (100), sampled at the voxel centres of a grid."""
    x, y, z = world_grid(affine, shape)
    inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius**2
    return np.where(inside, 1000, 100).astype(np.int16)


@pytest.fixture(scope="session")
def example_site_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated site (6 subjects, coarse in-plane spacing for speed), written once per session."""
    root = tmp_path_factory.mktemp("example_site")
    write_example_site(root, n_subjects=6, seed=1, labelled_fraction=1.0, in_plane_mm=1.2)
    return root


@pytest.fixture()
def example_site(example_site_template: Path, tmp_path: Path) -> Path:
    """A private copy of the example site (tests may break it); returns the site.yaml path."""
    root = tmp_path / "site"
    shutil.copytree(example_site_template, root, ignore=shutil.ignore_patterns("work"))
    return root / "site.yaml"
