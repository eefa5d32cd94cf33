"""Tiny models for the federation tests (CPU, milliseconds)."""

from __future__ import annotations

import pytest
import torch

from endofed.config import ModelConfig
from endofed.models import Classifier3D, MaskedAutoencoder3D, build_classifier, build_mae
from tests.helpers import TINY_PATCH, TINY_ROI


@pytest.fixture()
def tiny_cfg() -> ModelConfig:
    return ModelConfig(
        patch_size=TINY_PATCH,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=2,
    )


@pytest.fixture()
def tiny_mae(tiny_cfg: ModelConfig) -> MaskedAutoencoder3D:
    return build_mae(tiny_cfg, TINY_ROI, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def tiny_classifier(tiny_cfg: ModelConfig) -> Classifier3D:
    return build_classifier(tiny_cfg, TINY_ROI, generator=torch.Generator().manual_seed(1))
