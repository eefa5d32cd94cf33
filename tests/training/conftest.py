"""Fixtures of the site-level training tests: a generated 10-subject site and tiny model settings."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from endofed.cli import train_cmd
from endofed.cli.common import run_command
from endofed.data.example import write_example_site

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
OVERRIDES = (
    "data.roi_size=[32,32,8]",
    "data.target_spacing=[4,4,8]",
    "model.patch_size=[8,8,4]",
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "model.decoder_dim=32",
    "model.decoder_depth=1",
    "model.decoder_heads=2",
    "pretrain.epochs=2",
    "finetune.epochs=2",
    "finetune.folds=2",
    "finetune.bootstrap=50",
)


def config_args(*extra: str) -> list[str]:
    """``--config tiny.yaml --set ...`` for the tiny test settings plus ``extra`` overrides."""
    args = ["--config", TINY]
    for item in (*OVERRIDES, *extra):
        args += ["--set", item]
    return args


def run_cli(argv: list[str]) -> int:
    """Run one of the train_cmd commands as ``endofed`` would (one-line errors, exit code)."""
    parser = argparse.ArgumentParser(prog="endofed")
    train_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(lambda: args.handler(args))


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
