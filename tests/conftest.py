"""Shared fixtures: a generated example site (helper functions live in tests/helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from endofed.synth.example import write_example_site

if TYPE_CHECKING:
    from tests.bad_input_world import World


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


@pytest.fixture(scope="session")
def bad_input_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pristine site and certificates of the bad-input tests (tests/bad_input_world.py), made once."""
    from tests.bad_input_world import make_pristine

    return make_pristine(tmp_path_factory)


@pytest.fixture()
def world(bad_input_template: Path, tmp_path: Path) -> World:
    """A private copy of the bad-input site, with its site and server YAMLs."""
    from tests.bad_input_world import make_world

    return make_world(bad_input_template, tmp_path)
