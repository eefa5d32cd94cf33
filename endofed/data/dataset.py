"""PyTorch dataset over the preprocessing cache: an epoch reads memory-mapped arrays, never NIfTI."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from endofed.data.cache import VolumeCache

UNLABELLED = -1


class CachedVolumes(Dataset[dict[str, torch.Tensor]]):
    """Samples ``{"image": (2, X, Y, Z) float32, "mask": (2, X, Y, Z) bool, "label": () int64}``.

    ``label`` is ``-1`` for unlabelled cases.
    """

    def __init__(self, cache: VolumeCache, keys: Sequence[str], labels: Sequence[int | None]) -> None:
        if len(keys) != len(labels):
            raise ValueError(f"keys and labels differ in length: {len(keys)} vs {len(labels)}")
        self.cache = cache
        self.keys = list(keys)
        self.labels = [UNLABELLED if y is None else int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        entry = self.cache.get(self.keys[index])
        return {
            "image": torch.from_numpy(np.array(entry.image, dtype=np.float32)),
            "mask": torch.from_numpy(np.array(entry.mask, dtype=bool)),
            "label": torch.tensor(self.labels[index], dtype=torch.int64),
        }
