"""Patient-level, stratified, seeded train/test splits.

Every function works on subject ids (one per patient), so a subject can never appear in two splits.
Results depend only on the set of ids, their labels and the seed, not on the input order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _shuffled(ids: list[str], rng: np.random.Generator) -> list[str]:
    """Sorted then shuffled copy of ``ids`` (sorting first makes the result order-independent)."""
    ordered = sorted(ids)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def assign_splits(
    labels: Mapping[str, int | None],
    test_fraction: float,
    seed: int,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assign each subject to ``train`` or ``test``, stratified by label.

    Within each class (0 and 1), the shuffled subjects give ``round(n * test_fraction)`` to test; the rest go
    to train. Unlabelled subjects always go to train (they serve pre-training only). Subjects in ``fixed`` keep
    the split the manifest gave them and are left out of the stratified draw (a manifest's ``val`` is a
    development case like ``train``).

    Args:
        labels: subject id -> 0, 1 or ``None``.
        test_fraction: share of each labelled class held out for testing.
        seed: random seed.
        fixed: subject id -> split fixed by the manifest.

    Returns:
        subject id -> split, for every subject in ``labels``.
    """
    fixed = dict(fixed or {})
    rng = np.random.default_rng(seed)
    result = dict(fixed)
    for cls in (0, 1):
        ids = _shuffled([s for s, y in labels.items() if y == cls and s not in fixed], rng)
        n_test = round(len(ids) * test_fraction)
        for position, subject in enumerate(ids):
            result[subject] = "test" if position < n_test else "train"
    for subject, label in labels.items():
        if label is None and subject not in fixed:
            result[subject] = "train"
    return result
