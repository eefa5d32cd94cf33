"""Fixtures of the site-level training tests: a generated 10-subject site, trained once per module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from endofed.synth.example import write_example_site
from tests.helpers import config_args, run_cli


@pytest.fixture(autouse=True, scope="package")
def single_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and an intra-op pool on a busy machine can be 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def training_site_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 subjects: 5 negative, 4 positive, 1 unlabelled (sub-006); coarse in-plane spacing for speed."""
    root = tmp_path_factory.mktemp("training_site")
    write_example_site(root, n_subjects=10, seed=3, labelled_fraction=0.8, in_plane_mm=1.5)
    return root


@pytest.fixture()
def training_site(training_site_template: Path, tmp_path: Path) -> Path:
    """A private copy of the training site; returns its site.yaml."""
    root = tmp_path / "site"
    shutil.copytree(training_site_template, root, ignore=shutil.ignore_patterns("work"))
    return root / "site.yaml"


@pytest.fixture(scope="module")
def trained_site(training_site_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site copy on which pretrain, finetune (both arms) have run through the CLI; returns site.yaml."""
    root = tmp_path_factory.mktemp("trained") / "site"
    shutil.copytree(training_site_template, root, ignore=shutil.ignore_patterns("work"))
    site = root / "site.yaml"
    work = root / "work"
    assert run_cli(["pretrain", "--site", str(site), *config_args()]) == 0
    assert run_cli(["finetune", "--site", str(site), "--init", "scratch", *config_args()]) == 0
    assert run_cli(["finetune", "--site", str(site), "--init", str(work / "pretrain"), *config_args()]) == 0
    return site
