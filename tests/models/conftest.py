"""Tiny model settings shared by the model tests (CPU, milliseconds per forward)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from endofed.config import ModelConfig
from tests.helpers import TINY_PATCH


@pytest.fixture()
def tiny_cfg() -> ModelConfig:
    return ModelConfig(
        patch_size=TINY_PATCH,
        embed_dim=48,
        depth=2,
        num_heads=4,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
        num_classes=3,
        drop_path=0.1,
    )


@pytest.fixture(autouse=True, scope="package")
def single_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and an intra-op pool on a busy machine can be 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
