import itertools

import pytest
import torch

from endofed.models.patches import grid_size, patchify, unpatchify, visible_indices


def test_hand_checked_patches_along_z():
    x = torch.arange(8.0).view(1, 1, 2, 2, 2)  # x[0, 0, i, j, k] = 4i + 2j + k
    tokens = patchify(x, (1, 1, 2))
    # grid (2, 2, 1): token (i, j) holds voxels (i, j, 0..1)
    assert tokens.tolist() == [[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]]


def test_hand_checked_patches_along_x():
    x = torch.arange(8.0).view(1, 1, 2, 2, 2)
    tokens = patchify(x, (2, 1, 1))
    # grid (1, 2, 2): token (j, k) holds voxels (0..1, j, k) = 2j + k + {0, 4}
    assert tokens.tolist() == [[[0.0, 4.0], [1.0, 5.0], [2.0, 6.0], [3.0, 7.0]]]


def test_modality_major_token_order():
    t1 = torch.zeros(1, 1, 4, 4, 2)
    t2 = torch.ones(1, 1, 4, 4, 2)
    tokens = patchify(torch.cat([t1, t2], dim=1), (2, 2, 1))  # L = 2 * 2 * 2 = 8 per modality
    assert tokens.shape == (1, 16, 4)
    assert tokens[0, :8].eq(0).all() and tokens[0, 8:].eq(1).all()


def test_token_index_is_c_order_over_the_grid():
    patch, spatial = (2, 3, 1), (4, 6, 3)
    x = torch.zeros(1, 1, *spatial)
    x[0, 0, 2:4, 3:6, 1] = 1.0  # patch (ix=1, iy=1, iz=1) of grid (2, 2, 3)
    tokens = patchify(x, patch)
    hit = tokens[0].sum(dim=1).nonzero().flatten().tolist()
    assert hit == [(1 * 2 + 1) * 3 + 1]


@pytest.mark.parametrize(
    ("spatial", "patch"),
    [((16, 16, 8), (16, 16, 4)), ((8, 12, 6), (4, 3, 2)), ((6, 4, 10), (1, 2, 5)), ((4, 4, 4), (4, 4, 4))],
)
def test_round_trip_anisotropic(spatial, patch):
    x = torch.randn(3, 2, *spatial, generator=torch.Generator().manual_seed(0))
    tokens = patchify(x, patch)
    volume = patch[0] * patch[1] * patch[2]
    assert tokens.shape == (3, 2 * x[0, 0].numel() // volume, volume)
    assert torch.equal(unpatchify(tokens, patch, spatial), x)


def test_grid_size():
    assert grid_size((128, 128, 32), (16, 16, 4)) == (8, 8, 8)


@pytest.mark.parametrize(("spatial", "patch"), list(itertools.product([(64, 64, 18)], [(16, 16, 4), (5, 16, 4)])))
def test_indivisible_size_is_refused_with_the_values(spatial, patch):
    with pytest.raises(ValueError, match=r"\(64, 64, 18\)"):
        patchify(torch.zeros(1, 1, *spatial), patch)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 4\)"):
        patchify(torch.zeros(2, 4, 4, 4), (2, 2, 2))
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(torch.zeros(1, 7, 8), (2, 2, 2), (4, 4, 4))
    with pytest.raises(ValueError, match=r"\(0, 2, 2\)"):
        grid_size((4, 4, 4), (0, 2, 2))


def test_visible_indices_hand_checked_and_refuses_ragged_rows():
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    assert visible_indices(mask).tolist() == [[1, 3], [0, 3]]
    assert visible_indices(mask, 2).tolist() == [[1, 3], [0, 3]]
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        visible_indices(torch.tensor([[True, False, True, True], [False, True, True, False]]))
    with pytest.raises(ValueError, match="bool"):
        visible_indices(torch.zeros(2, 4, dtype=torch.int64))
