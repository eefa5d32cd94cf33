from __future__ import annotations

import random
from collections import Counter

from endofed.data.splits import assign_splits


def _labels(n_pos: int, n_neg: int, n_unlabelled: int = 0) -> dict[str, int | None]:
    labels: dict[str, int | None] = {f"p{i:02d}": 1 for i in range(n_pos)}
    labels |= {f"n{i:02d}": 0 for i in range(n_neg)}
    labels |= {f"u{i:02d}": None for i in range(n_unlabelled)}
    return labels


def test_split_counts_by_hand():
    # 10 positives, 20 negatives, 5 unlabelled, test 0.25:
    # positives -> round(2.5) = 2 test (round half to even), 8 train; negatives -> 5 test, 15 train.
    labels = _labels(10, 20, 5)
    splits = assign_splits(labels, test_fraction=0.25, seed=0)
    counts = Counter((labels[s], split) for s, split in splits.items())
    assert counts == {(1, "test"): 2, (1, "train"): 8, (0, "test"): 5, (0, "train"): 15, (None, "train"): 5}
    assert set(splits) == set(labels)


def test_splits_are_seeded_and_order_independent():
    labels = _labels(9, 13, 3)
    items = list(labels.items())
    random.Random(1).shuffle(items)
    shuffled = dict(items)
    assert assign_splits(labels, 0.2, seed=5) == assign_splits(shuffled, 0.2, seed=5)
    assert assign_splits(labels, 0.2, seed=5) != assign_splits(labels, 0.2, seed=6)


def test_fixed_splits_are_kept():
    labels = _labels(4, 4)
    fixed = {"p00": "test", "n00": "test", "n01": "val"}
    splits = assign_splits(labels, test_fraction=0.0, seed=0, fixed=fixed)
    assert {s: splits[s] for s in fixed} == fixed
    assert all(splits[s] == "train" for s in labels if s not in fixed)
