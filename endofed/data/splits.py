"""Patient-level, stratified, seeded splits and cross-validation folds.

Every function works on subject ids (one per patient), so a subject can never appear in two splits.
Results depend only on the set of ids, their labels and the seed, not on the input order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.model_selection import StratifiedKFold

from endofed.errors import DataError


def _shuffled(ids: list[str], rng: np.random.Generator) -> list[str]:
    """Sorted then shuffled copy of ``ids`` (sorting first makes the result order-independent)."""
    ordered = sorted(ids)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def assign_splits(
    labels: Mapping[str, int | None],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assign each subject to ``train``, ``val`` or ``test``, stratified by label.

    Within each class (0 and 1), the shuffled subjects give ``round(n * test_fraction)`` to test and
    ``round(n * val_fraction)`` to val; the rest go to train. Unlabelled subjects always go to train
    (they serve pre-training only). Subjects in ``fixed`` keep the split the manifest gave them and are
    left out of the stratified draw.

    Args:
        labels: subject id -> 0, 1 or ``None``.
        test_fraction: share of each labelled class held out for testing.
        val_fraction: share of each labelled class for validation.
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
        n_test, n_val = round(len(ids) * test_fraction), round(len(ids) * val_fraction)
        for position, subject in enumerate(ids):
            result[subject] = "test" if position < n_test else "val" if position < n_test + n_val else "train"
    for subject, label in labels.items():
        if label is None and subject not in fixed:
            result[subject] = "train"
    return result


def stratified_folds(labels: Mapping[str, int], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Patient-level stratified k-fold cross-validation (scikit-learn's ``StratifiedKFold``).

    Args:
        labels: subject id -> 0/1, labelled subjects only.
        k: number of folds.
        seed: random seed.

    Returns:
        ``k`` pairs ``(train_ids, test_ids)``; each subject is in exactly one test fold.

    Raises:
        DataError: a class has fewer than ``k`` subjects.
    """
    ids = sorted(labels)
    y = np.array([labels[s] for s in ids])
    counts = {cls: int((y == cls).sum()) for cls in (0, 1)}
    if min(counts.values()) < k:
        raise DataError(
            f"{k}-fold cross-validation needs at least {k} subjects of each class, got "
            f"{counts[0]} negative and {counts[1]} positive",
            "too_few_cases",
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for train_idx, test_idx in splitter.split(np.zeros(len(ids)), y):
        folds.append(([ids[i] for i in train_idx], [ids[i] for i in test_idx]))
    return folds
