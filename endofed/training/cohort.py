"""A site's usable cases and their patient-level splits, shared by pre-training and fine-tuning.

Both runs call :func:`load_cohort`, so both see the *same* held-out test patients: the split is a function
of the usable cases, their labels, the manifest's fixed splits and the split seed only (``finetune.split_seed``,
by default ``ExperimentConfig.seed``)
(:func:`endofed.data.splits.assign_splits` with ``finetune.test_fraction`` / ``val_fraction``).

Why pre-training leaves the test patients out although it uses no labels: self-supervision on a patient's
images still adapts the encoder to that patient (transductive learning). A pre-trained arm that has seen the
test images would be compared with a scratch arm that has not, and the difference would be flattered. So the
test split is held out of *every* training step; :func:`split_digest` records which patients that was, so
fine-tuning can check that an encoder was pre-trained without its test patients.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from endofed.config import ExperimentConfig, SiteConfig
from endofed.data.check import check_site, site_cache
from endofed.data.dataset import CachedVolumes
from endofed.data.site import CaseResult
from endofed.data.splits import assign_splits
from endofed.errors import DataError

LOGGER = logging.getLogger(__name__)


def derive_seed(seed: int, *parts: str | int) -> int:
    """A stable 63-bit seed from the global seed and names (site id, purpose, fold, round).

    Uses SHA-256, not ``hash()`` (which Python salts per process), so every run and machine agrees.
    """
    text = "/".join([str(seed), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & (2**63 - 1)


def split_digest(subject_ids: Sequence[str]) -> str:
    """SHA-256 of a set of subject ids (order-free); site-local, lets two runs check they share a split."""
    return hashlib.sha256("\n".join(sorted(subject_ids)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SiteCohort:
    """The usable cases of a site and the split of each subject.

    Attributes:
        site_id: the site's name.
        passport: the data passport of the check that produced the cases.
        cases: usable cases (``ok``), in manifest order.
        splits: subject id -> ``train`` / ``val`` / ``test``.
    """

    site_id: str
    passport: dict[str, Any]
    cases: list[CaseResult]
    splits: dict[str, str]

    def select(self, splits: Sequence[str], labelled_only: bool) -> list[CaseResult]:
        """Cases whose split is in ``splits`` (optionally only labelled ones), sorted by subject id."""
        chosen = [
            r
            for r in self.cases
            if self.splits[r.case.subject_id] in splits and (r.case.label is not None or not labelled_only)
        ]
        return sorted(chosen, key=lambda r: r.case.subject_id)

    @property
    def test_ids(self) -> list[str]:
        """Subjects of the held-out test split (labelled or not), sorted."""
        return sorted(s for s, split in self.splits.items() if split == "test")


def load_cohort(site: SiteConfig, cfg: ExperimentConfig, allow_failures: bool = False) -> SiteCohort:
    """Check the site's data (filling the cache), refuse if it is not ready, and split the subjects.

    Args:
        site: the site.
        cfg: experiment config (``data`` for preprocessing; ``finetune`` fractions and ``seed`` for the split).
        allow_failures: train on the usable cases even if some failed (as ``endofed data check
            --allow-failures``).

    Returns:
        The cohort.

    Raises:
        DataError: the passport is not ready (no usable case, or failed cases without ``allow_failures``).
    """
    check = check_site(site, cfg.data, allow_failures=allow_failures)
    counts = check.passport["cases"]
    if not check.passport["ready"]:
        raise DataError(
            f"site {site.site_id!r} is not ready to train: {counts['usable']} of {counts['total']} cases usable, "
            f"failures {check.passport['failures'] or 'none'}; run 'endofed data check --site ...' and fix them",
            "not_ready",
        )
    usable = [r for r in check.results if r.ok]
    labels = {r.case.subject_id: r.case.label for r in usable}
    fixed = {r.case.subject_id: r.case.split for r in usable if r.case.split is not None}
    split_seed = cfg.seed if cfg.finetune.split_seed < 0 else cfg.finetune.split_seed
    splits = assign_splits(labels, cfg.finetune.test_fraction, cfg.finetune.val_fraction, split_seed, fixed)
    cohort = SiteCohort(site.site_id, check.passport, usable, splits)
    LOGGER.info("site %s: %d usable cases, %d held out for testing", site.site_id, len(usable), len(cohort.test_ids))
    return cohort


def label_of(result: CaseResult) -> int:
    """The 0/1 label of a labelled case; ``ValueError`` naming the subject for an unlabelled one."""
    if result.case.label is None:
        raise ValueError(f"subject {result.case.subject_id!r} is unlabelled")
    return int(result.case.label)


def case_dataset(site: SiteConfig, cases: Sequence[CaseResult]) -> CachedVolumes:
    """The cached volumes of ``cases`` (labels ``-1`` for unlabelled ones)."""
    keys = [r.key for r in cases]
    if any(key is None for key in keys):
        raise ValueError("only usable cases (with a cache key) can be loaded")
    return CachedVolumes(site_cache(site), [str(k) for k in keys], [r.case.label for r in cases])


def make_loader(
    dataset: CachedVolumes, batch_size: int, device: torch.device, shuffle_seed: int | None = None
) -> DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader over the cache: shuffled by a seeded generator when ``shuffle_seed`` is given.

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
