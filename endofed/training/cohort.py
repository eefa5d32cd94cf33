"""A site's usable cases and their patient-level splits, shared by pre-training and fine-tuning.

Both runs call :func:`load_cohort`, so both see the *same* held-out test patients: the split is a function
of the usable cases, their labels, the manifest's fixed splits and the split seed only (``finetune.split_seed``,
by default ``ExperimentConfig.seed``)
(:func:`endofed.data.splits.assign_splits` with ``finetune.test_fraction``).

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

from endofed.config import ExperimentConfig, SiteConfig
from endofed.data.check import check_site
from endofed.data.site import CaseResult
from endofed.data.splits import assign_splits
from endofed.errors import DataError

LOGGER = logging.getLogger(__name__)
TEST_SPLIT = "test"
DEVELOPMENT_SPLITS = ("train", "val")  # everything but the held-out test split (a manifest may name "val")


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

    def pretrain_cases(self) -> list[CaseResult]:
        """Every usable case outside the test split, labelled or not (MIM pre-training)."""
        return self.select(DEVELOPMENT_SPLITS, labelled_only=False)

    def dev_cases(self) -> list[CaseResult]:
        """The labelled development cases (fine-tuning)."""
        return self.select(DEVELOPMENT_SPLITS, labelled_only=True)

    def test_cases(self) -> list[CaseResult]:
        """The labelled held-out test patients (evaluation only)."""
        return self.select((TEST_SPLIT,), labelled_only=True)

    @property
    def test_ids(self) -> list[str]:
        """Subjects of the held-out test split (labelled or not), sorted."""
        return sorted(s for s, split in self.splits.items() if split == TEST_SPLIT)


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
    splits = assign_splits(labels, cfg.finetune.test_fraction, split_seed, fixed)
    cohort = SiteCohort(site.site_id, check.passport, usable, splits)
    LOGGER.info("site %s: %d usable cases, %d held out for testing", site.site_id, len(usable), len(cohort.test_ids))
    return cohort
