"""Near-duplicate thumbnails: block means, standardisation and the pairing, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from endofed.data.similarity import _block_means, near_duplicate_pairs, thumbnail


def test_block_means_by_hand():
    volume = np.arange(4 * 2 * 1, dtype=float).reshape(4, 2, 1)  # x rows: [0,1], [2,3], [4,5], [6,7]
    np.testing.assert_allclose(_block_means(volume, (2, 1, 1)).ravel(), [1.5, 5.5])  # (0+1+2+3)/4, (4+5+6+7)/4
    np.testing.assert_allclose(_block_means(volume, (4, 2, 1)), volume)  # one voxel per block
    np.testing.assert_allclose(_block_means(volume, (8, 8, 8)), volume)  # a grid finer than the volume: unchanged
    # Uneven blocks: 5 voxels into 2 blocks -> edges 0, 2(.5 rounds to 2), 5: means of [0,1] and [2,3,4].
    np.testing.assert_allclose(_block_means(np.arange(5.0).reshape(5, 1, 1), (2, 1, 1)).ravel(), [0.5, 3.0])


def test_thumbnail_is_standardised_and_skips_absent_or_flat_channels():
    image = np.zeros((3, 4, 2, 1))
    image[0] = np.arange(8.0).reshape(4, 2, 1)
    image[2] = 5.0  # flat
    mask = np.ones_like(image, dtype=bool)
    mask[1] = False  # absent modality
    first, absent, flat = thumbnail(image, mask, grid=(2, 1, 1))
    assert first == [-1.0, 1.0]  # block means 1.5, 5.5: mean 3.5, std 2
    assert absent is None and flat is None


def test_rescaled_copy_correlates_at_one_and_is_paired_with_the_earliest_best_match():
    rng = np.random.default_rng(0)
    base = rng.random((1, 8, 8, 4))
    other = rng.random((1, 8, 8, 4))
    mask = np.ones_like(base, dtype=bool)
    thumbs = [
        thumbnail(base, mask, (4, 4, 2)),
        thumbnail(other, mask, (4, 4, 2)),
        thumbnail(3 * base + 7, mask, (4, 4, 2)),
    ]
    pairs = near_duplicate_pairs(thumbs, 0.99)
    assert [(a, b, c) for a, b, c, _ in pairs] == [(0, 2, 0)]
    assert pairs[0][3] == pytest.approx(1.0, abs=1e-3)
    assert near_duplicate_pairs(thumbs, 0.0) == []  # off


def test_pairs_by_hand_per_channel_with_missing_channels():
    a, b = [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]  # standardised, orthogonal: correlation 0
    thumbs = [[a, None], [b, b], [a, b]]  # case 2: T1 like case 0, T2 like case 1
    pairs = near_duplicate_pairs(thumbs, 0.9)
    assert pairs == [(0, 2, 0, 1.0)]  # one pair per later case (the first channel found at the best value)
    assert near_duplicate_pairs([[a, None], [b, None]], 0.9) == []
