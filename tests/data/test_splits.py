from __future__ import annotations

import random
from collections import Counter

import pytest

from endofed.data.splits import assign_splits, stratified_folds
from endofed.errors import DataError


def _labels(n_pos: int, n_neg: int, n_unlabelled: int = 0) -> dict[str, int | None]:
    labels: dict[str, int | None] = {f"p{i:02d}": 1 for i in range(n_pos)}
    labels |= {f"n{i:02d}": 0 for i in range(n_neg)}
    labels |= {f"u{i:02d}": None for i in range(n_unlabelled)}
    return labels


def test_split_counts_by_hand():
    # 10 positives, 20 negatives, 5 unlabelled, test 0.2, val 0.1:
    # positives -> 2 test, 1 val, 7 train; negatives -> 4 test, 2 val, 14 train; unlabelled -> train.
    labels = _labels(10, 20, 5)
    splits = assign_splits(labels, test_fraction=0.2, val_fraction=0.1, seed=0)
    counts = Counter((labels[s], split) for s, split in splits.items())
    assert counts == {
        (1, "test"): 2, (1, "val"): 1, (1, "train"): 7,
        (0, "test"): 4, (0, "val"): 2, (0, "train"): 14,
        (None, "train"): 5,
    }  # fmt: skip
    assert set(splits) == set(labels)


def test_splits_are_seeded_and_order_independent():
    labels = _labels(9, 13, 3)
    items = list(labels.items())
    random.Random(1).shuffle(items)
    shuffled = dict(items)
    assert assign_splits(labels, 0.2, 0.1, seed=5) == assign_splits(shuffled, 0.2, 0.1, seed=5)
    assert assign_splits(labels, 0.2, 0.1, seed=5) != assign_splits(labels, 0.2, 0.1, seed=6)


def test_fixed_splits_are_kept():
    labels = _labels(4, 4)
    fixed = {"p00": "test", "n00": "test", "n01": "val"}
    splits = assign_splits(labels, test_fraction=0.0, val_fraction=0.0, seed=0, fixed=fixed)
    assert {s: splits[s] for s in fixed} == fixed
    assert all(splits[s] == "train" for s in labels if s not in fixed)


@pytest.mark.parametrize("seed", range(5))
def test_folds_partition_subjects_and_keep_balance(seed):
    labels = {s: y for s, y in _labels(8, 12).items() if y is not None}
    folds = stratified_folds(labels, k=4, seed=seed)
    test_sets = [set(test) for _, test in folds]
    assert sorted(s for t in test_sets for s in t) == sorted(labels)  # every subject tested exactly once
    for train, test in folds:
        assert not set(train) & set(test)
        assert Counter(labels[s] for s in test) == {1: 2, 0: 3}


def test_folds_need_k_of_each_class():
    with pytest.raises(
        DataError, match="5-fold cross-validation needs at least 5 subjects of each class, got 9 negative"
    ):
        stratified_folds({s: y for s, y in _labels(3, 9).items() if y is not None}, k=5, seed=0)
