"""Helpers shared by test modules: paths, the tiny test settings, NIfTI writers and a CLI runner.

Test modules import these from here, never from a conftest (pytest loads conftest files itself; importing one
as a module runs it twice under two names). Fixtures stay in the conftest files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"

# Tiny model settings of the model and federation tests (CPU, milliseconds per forward).
TINY_ROI = (16, 16, 8)
TINY_PATCH = (8, 8, 4)  # grid 2 x 2 x 2: L = 8 tokens per modality, N = 16, P = 256 voxels per token

# The tiny config and the overrides that make site-level training and federated runs take seconds on a CPU.
TINY = str(ROOT / "configs" / "tiny.yaml")
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
    "finetune.bootstrap=50",
)


def config_args(*extra: str) -> list[str]:
    """``--config tiny.yaml --set ...`` for the tiny test settings plus ``extra`` overrides."""
    args = ["--config", TINY]
    for item in (*OVERRIDES, *extra):
        args += ["--set", item]
    return args


def run_cli(argv: list[str]) -> int:
    """Run one of the train_cmd commands in this process as ``endofed`` would (one-line errors, exit code)."""
    from endofed.cli import train_cmd  # the CLI stack only for the tests that use it
    from endofed.cli.common import run_command

    parser = argparse.ArgumentParser(prog="endofed")
    train_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(lambda: args.handler(args))


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
