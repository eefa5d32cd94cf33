import itertools

import pytest
import torch

from endofed.models.patches import visible_indices
from endofed.ssl.mask_modes import MASK_MODES
from endofed.ssl.masking import (
    MASK_FUNCTIONS,
    hidden_per_modality,
    independent_mask,
    make_mask,
    modality_drop_mask,
    num_visible,
    patch_validity,
    shared_mask,
)

B, M, L = 16, 2, 64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("mode", "ratio"), list(itertools.product(["shared", "independent"], [0.75, 0.5, 0.1])))
def test_exact_count_per_modality(mode, ratio):
    mask = make_mask(mode, B, M, L, ratio, gen())
    assert mask.shape == (B, M * L) and mask.dtype == torch.bool
    per_modality = mask.view(B, M, L).sum(dim=2)
    assert per_modality.eq(round(ratio * L)).all()


def test_hidden_count_is_rounded():
    assert hidden_per_modality(64, 0.75) == 48
    assert hidden_per_modality(10, 0.25) == 2  # round(2.5) -> 2 (banker's rounding, as Python's round)
    assert hidden_per_modality(10, 0.26) == 3
    assert num_visible(2, 64, 0.75) == 32


def test_independent_masks_differ_between_modalities():
    mask = make_mask("independent", B, M, L, 0.75, gen()).view(B, M, L)
    differs = (mask[:, 0] != mask[:, 1]).any(dim=1)
    assert differs.all()  # the chance of an identical pair is C(64, 48)^-1 per sample


def test_shared_masks_are_identical_between_modalities():
    mask = make_mask("shared", B, M, L, 0.75, gen()).view(B, M, L)
    assert torch.equal(mask[:, 0], mask[:, 1])
    assert not torch.equal(mask[0, 0], mask[1, 0])  # but differ between samples


@pytest.mark.parametrize("mode", ["shared", "independent", "modality_drop"])
def test_same_generator_state_same_mask(mode):
    first = make_mask(mode, B, M, L, 0.75, gen(7), drop_prob=0.5)
    again = make_mask(mode, B, M, L, 0.75, gen(7), drop_prob=0.5)
    other = make_mask(mode, B, M, L, 0.75, gen(8), drop_prob=0.5)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_modality_drop_with_certain_drop_hides_one_modality_whole():
    mask = modality_drop_mask(B, M, L, 0.75, gen(), drop_prob=1.0).view(B, M, L)
    whole = mask.all(dim=2)  # (B, M)
    assert whole.sum(dim=1).eq(1).all()
    # the other modality hides 2k - L = 96 - 64 = 32 tokens, so the visible count stays 32 per sample
    assert mask.sum(dim=(1, 2)).eq(2 * 48).all()
    assert whole[:, 0].any() and whole[:, 1].any()  # both modalities get dropped over 16 samples


def test_modality_drop_without_drop_is_the_independent_mask():
    assert torch.equal(modality_drop_mask(B, M, L, 0.75, gen(3), 0.0), independent_mask(B, M, L, 0.75, gen(3)))


def test_modality_drop_keeps_the_visible_count_constant():
    mask = modality_drop_mask(64, M, L, 0.75, gen(), drop_prob=0.3)
    assert (~mask).sum(dim=1).eq(num_visible(M, L, 0.75)).all()
    dropped = mask.view(64, M, L).all(dim=2).any(dim=1)
    assert 0 < int(dropped.sum()) < 64


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.1, 0.001, 0.999])
def test_bad_ratio_is_refused_with_the_value(ratio):
    with pytest.raises(ValueError, match=str(ratio)):
        make_mask("independent", B, M, L, ratio, gen())


def test_bad_mode_and_drop_arguments_are_refused():
    with pytest.raises(ValueError, match="'random'"):
        make_mask("random", B, M, L, 0.75, gen())
    with pytest.raises(ValueError, match="1.5"):
        make_mask("modality_drop", B, M, L, 0.75, gen(), drop_prob=1.5)
    with pytest.raises(ValueError, match="0.3"):
        make_mask("modality_drop", B, M, L, 0.3, gen())


def test_visible_indices_are_sorted_and_visible():
    mask = make_mask("modality_drop", B, M, L, 0.75, gen(), drop_prob=0.5)
    idx = visible_indices(mask, num_visible(M, L, 0.75))
    assert idx.shape == (B, 32)
    assert (idx[:, 1:] > idx[:, :-1]).all()
    assert not mask.gather(1, idx).any()
    assert torch.equal(visible_indices(mask), idx)  # the count read back from the mask agrees


def test_patch_validity_marks_patches_with_any_valid_voxel():
    valid = torch.zeros(1, 2, 4, 4, 2, dtype=torch.bool)
    valid[0, 0, 0, 0, 0] = True  # one voxel of T1 patch (0, 0, 0)
    valid[0, 1] = True  # all of T2
    tokens = patch_validity(valid, (2, 2, 2))  # L = 4 per modality
    assert tokens.tolist() == [[True, False, False, False, True, True, True, True]]


def test_the_mode_table_has_exactly_the_mode_names():
    assert tuple(MASK_FUNCTIONS) == MASK_MODES == ("shared", "independent", "modality_drop")


@pytest.mark.parametrize(
    ("mode", "direct"),
    [
        ("shared", lambda g: shared_mask(B, M, L, 0.75, g)),
        ("independent", lambda g: independent_mask(B, M, L, 0.75, g)),
        ("modality_drop", lambda g: modality_drop_mask(B, M, L, 0.75, g, 0.5)),
    ],
)
def test_make_mask_draws_exactly_what_the_mode_function_draws(mode, direct):
    assert torch.equal(make_mask(mode, B, M, L, 0.75, gen(4), drop_prob=0.5), direct(gen(4)))
