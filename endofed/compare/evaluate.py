"""``endofed evaluate``: a pre-trained fine-tuning run against a from-scratch one, as a two-arm comparison.

Both runs of ``endofed finetune`` predicted the same held-out test patients, so this is the two-arm, one-seed
case of ``endofed compare``'s tables (:mod:`endofed.compare.tables`): each arm's metrics with bootstrap 95%
CIs (the same resamples for both arms), the paired AUC difference with its CI and one-sided p, and the
relative gain over scratch as the seed paper reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endofed.compare.arms import BASELINE
from endofed.compare.tables import ArmPredictions, metric_table, summarise
from endofed.training.records import Prediction, ResultsError, read_predictions, read_results

LOGGER = logging.getLogger(__name__)
PRETRAINED = "pretrained"  # the arm compared with BASELINE ("scratch")
DEFAULT_BOOTSTRAP = 1000


@dataclass(frozen=True)
class Evaluation:
    """The comparison of two runs: :func:`~endofed.compare.tables.summarise` rows of both arms, and provenance."""

    rows: dict[str, dict[str, Any]]  # arm -> summary row (BASELINE, PRETRAINED)
    bootstrap: int
    seed: int
    same_config: bool

    @property
    def n_cases(self) -> int:
        """Test patients both runs predicted."""
        return int(self.rows[BASELINE]["n_test"])

    @property
    def n_positive(self) -> int:
        """Positive test patients among them."""
        return int(self.rows[BASELINE]["n_test_positive"])

    def table(self) -> list[list[str]]:
        """Header and rows: every metric per arm with its 95% CI, then the paired AUC difference and gain."""
        return metric_table(list(self.rows.values()), (BASELINE, PRETRAINED))


def _test_predictions(run_dir: Path) -> dict[str, Prediction]:
    """The test-split predictions of a run, by subject id."""
    rows = [r for r in read_predictions(run_dir) if r.split == "test"]
    if not rows:
        raise ResultsError(f"{run_dir} has no test predictions")
    by_id = {r.subject_id: r for r in rows}
    if len(by_id) != len(rows):
        raise ResultsError(f"{run_dir} has duplicate test predictions for a patient")
    return by_id


def paired_predictions(scratch_dir: Path, pretrained_dir: Path, site: str = "test") -> list[ArmPredictions]:
    """Both runs' test predictions as one-seed arms (``scratch``, ``pretrained``) on the same patients.

    Raises:
        ResultsError: a file is missing or malformed, or the runs predicted other patients or labels.
    """
    scratch, pretrained = _test_predictions(scratch_dir), _test_predictions(pretrained_dir)
    if set(scratch) != set(pretrained):
        only = sorted(set(scratch) ^ set(pretrained))
        raise ResultsError(
            f"the two runs were evaluated on different patients ({len(scratch)} vs {len(pretrained)} test "
            f"patients, {len(only)} not in both, e.g. {only[0]!r}): run both with the same site and config"
        )
    ids = sorted(scratch)
    differ = [s for s in ids if scratch[s].label != pretrained[s].label]
    if differ:
        raise ResultsError(f"the two runs disagree on the label of {len(differ)} test patient(s), e.g. {differ[0]!r}")
    labels = np.array([scratch[s].label for s in ids], dtype=np.int64)
    return [
        ArmPredictions(site, arm, 1.0, [0], labels, np.array([[run[s].prob for s in ids]]))
        for arm, run in ((BASELINE, scratch), (PRETRAINED, pretrained))
    ]


def _check_arms(scratch: Mapping[str, Any], pretrained: Mapping[str, Any]) -> None:
    """Refuse swapped arms; warn when the two runs used different configs."""
    if scratch.get("init") != "scratch":
        raise ResultsError(f"--scratch must be a run fine-tuned from scratch, got init {scratch.get('init')!r}")
    if pretrained.get("init") == "scratch":
        raise ResultsError("--pretrained must be a run fine-tuned from a pre-trained encoder, got init 'scratch'")
    if scratch.get("config_hash") != pretrained.get("config_hash"):
        LOGGER.warning("the two runs used different configs: the comparison is not like for like")


def evaluate_runs(scratch_dir: Path, pretrained_dir: Path) -> Evaluation:
    """Paired comparison of two ``endofed finetune`` output folders (resamples and seed of the pre-trained run).

    Raises:
        ResultsError: a folder or file is missing or malformed, the arms are swapped, or the runs were
            evaluated on different patients or labels.
    """
    scratch_meta, pretrained_meta = read_results(scratch_dir), read_results(pretrained_dir)
    _check_arms(scratch_meta, pretrained_meta)
    arms = paired_predictions(Path(scratch_dir), Path(pretrained_dir), str(pretrained_meta.get("site_id", "test")))
    n_boot = int(pretrained_meta.get("bootstrap", DEFAULT_BOOTSTRAP))
    seed = int(pretrained_meta.get("seed", 0))
    rows = {row["arm"]: row for row in summarise(arms, n_boot, boot_seed=seed)}
    same = scratch_meta.get("config_hash") == pretrained_meta.get("config_hash")
    return Evaluation(rows, n_boot, seed, same)
