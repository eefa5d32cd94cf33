"""Datasets and loaders over a site's preprocessing cache, for any set of cases of one or several sites.

Every training and evaluation path (single-site, federated site, pooled) builds its batches here, so the
order of volumes and the shuffling are the same wherever the same cases and seed are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from endofed.config import SiteConfig
from endofed.data.check import site_cache
from endofed.data.dataset import CachedVolumes
from endofed.data.site import CaseResult


def label_of(result: CaseResult) -> int:
    """The 0/1 label of a labelled case; ``ValueError`` naming the subject for an unlabelled one."""
    if result.case.label is None:
        raise ValueError(f"subject {result.case.subject_id!r} is unlabelled")
    return int(result.case.label)


@dataclass(frozen=True)
class SiteCases:
    """Some usable cases of one site (the site is needed to find their cache)."""

    site: SiteConfig
    cases: list[CaseResult]

    @property
    def subject_ids(self) -> list[str]:
        """The cases' subject ids (site-local), sorted."""
        return sorted(r.case.subject_id for r in self.cases)

    @property
    def labels(self) -> list[int]:
        """The 0/1 labels of the cases, in order (``ValueError`` if one is unlabelled)."""
        return [label_of(r) for r in self.cases]


def case_dataset(site: SiteConfig, cases: Sequence[CaseResult]) -> CachedVolumes:
    """The cached volumes of ``cases`` (labels ``-1`` for unlabelled ones)."""
    keys = [r.key for r in cases]
    if any(key is None for key in keys):
        raise ValueError("only usable cases (with a cache key) can be loaded")
    return CachedVolumes(site_cache(site), [str(k) for k in keys], [r.case.label for r in cases])


def parts_dataset(parts: Sequence[SiteCases]) -> Dataset[dict[str, torch.Tensor]]:
    """The cached volumes of every part, one site after another (a single part: its own dataset).

    Raises:
        ValueError: if no part has a case.
    """
    datasets = [case_dataset(p.site, p.cases) for p in parts if p.cases]
    if not datasets:
        raise ValueError("no case to train on")
    return datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)


def make_loader(
    dataset: Dataset[dict[str, torch.Tensor]], batch_size: int, device: torch.device, shuffle_seed: int | None = None
) -> DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader over the cache: shuffled by a seeded generator when ``shuffle_seed`` is given, else in order.

    Reads are memory-mapped and cheap (see ``benchmarks/cpu_epoch_split.py``), so the loader runs in the main
    process; on CUDA it pins memory so that :mod:`endofed.ssl.prefetch` can overlap the copy with compute.
    """
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        generator=generator,
        num_workers=0,
        pin_memory=device.type == "cuda",
    )
