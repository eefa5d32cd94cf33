import math

import pytest
import torch

from endofed.finetune.augment import (
    AugmentParams,
    affine_batch,
    affine_theta,
    flip_batch,
    intensity_batch,
    random_augment,
    rotation_matrices,
)

SHAPE = (2, 2, 8, 8, 8)


def batch(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(shape, generator=g)
    mask = torch.rand(shape, generator=g) > 0.2
    return image, mask


def test_flips_are_exact_per_case_permutations():
    image, mask = batch()
    flips = torch.tensor([[True, False, False], [False, True, True]])
    out, out_mask = flip_batch(image, mask, flips)
    assert torch.equal(out[0], image[0].flip(1))  # case 0: X (dim 1 of a (C, X, Y, Z) case)
    assert torch.equal(out[1], image[1].flip(2).flip(3))  # case 1: Y and Z
    assert torch.equal(out_mask[0], mask[0].flip(1)) and torch.equal(out_mask[1], mask[1].flip(2, 3))
    assert torch.equal(out.flatten().sort().values, image.flatten().sort().values)  # nothing created or lost


def test_no_flip_is_identity():
    image, mask = batch()
    out, out_mask = flip_batch(image, mask, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(out, image) and torch.equal(out_mask, mask)


def test_identity_affine_is_identity():
    image, mask = batch()
    out, out_mask = affine_batch(image, mask, torch.zeros(2, 3), torch.ones(2), spacing=(2.0, 2.0, 4.0))
    assert torch.allclose(out, image, atol=1e-5)
    assert torch.equal(out_mask, mask) and out_mask.dtype == torch.bool


def test_quarter_turn_about_z_matches_rot90():
    # Output at p samples the input at R p: out[i, j] = in[n - 1 - j, i] for 90 degrees about Z (isotropic).
    image, mask = batch()
    angles = torch.tensor([[0.0, 0.0, math.pi / 2]] * 2)
    out, out_mask = affine_batch(image, mask, angles, torch.ones(2))
    assert torch.allclose(out, torch.rot90(image, -1, dims=(2, 3)), atol=1e-5)
    assert torch.equal(out_mask, torch.rot90(mask, -1, dims=(2, 3)))


def test_rotation_matrices_hand_checked():
    c, s = math.cos(0.3), math.sin(0.3)
    about_x = rotation_matrices(torch.tensor([[0.3, 0.0, 0.0]]))[0]
    assert torch.allclose(about_x, torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]]), atol=1e-6)
    about_z = rotation_matrices(torch.tensor([[0.0, 0.0, 0.3]]))[0]
    assert torch.allclose(about_z, torch.tensor([[c, -s, 0.0], [s, c, 0], [0, 0, 1]]), atol=1e-6)


def test_theta_accounts_for_anisotropic_spacing_and_axis_order():
    # 16 x 8 x 4 voxels of 1 x 2 x 4 mm: half extents E = (8, 8, 8) mm -> rotation in mm is the plain one.
    theta = affine_theta(torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.tensor([1.0]), (16, 8, 4), (1.0, 2.0, 4.0))
    xyz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(theta[0, :, :3], xyz.flip(0).flip(1), atol=1e-6)
    # 16 x 8 voxels of 1 x 1 mm: E = (8, 4) -> E^-1 R E = [[0, -0.5], [2, 0]]; scale 2 halves it.
    theta = affine_theta(torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.tensor([2.0]), (16, 8, 4), (1.0, 1.0, 1.0))
    xyz = torch.tensor([[0.0, -0.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) / 2
    assert torch.allclose(theta[0, :, :3], xyz.flip(0).flip(1), atol=1e-6)
    assert torch.equal(theta[0, :, 3], torch.zeros(3))


def test_zoom_in_enlarges_a_centred_blob_and_outside_is_invalid():
    axes = torch.meshgrid(*(torch.arange(16.0) - 7.5 for _ in range(3)), indexing="ij")
    blob = (sum(a**2 for a in axes) < 16).float()
    image = blob.expand(1, 2, 16, 16, 16).clone()
    mask = torch.ones_like(image, dtype=torch.bool)
    zoomed, _ = affine_batch(image, mask, torch.zeros(1, 3), torch.tensor([1.5]))
    assert (zoomed > 0.5).sum() > 2 * (image > 0.5).sum()
    _, shrunk_mask = affine_batch(image, mask, torch.zeros(1, 3), torch.tensor([0.5]))
    assert not shrunk_mask[0, 0, 0, 0, 0] and shrunk_mask[0, 0, 8, 8, 8]  # corners come from outside


def test_intensity_jitter_inside_valid_voxels_only():
    image, mask = batch()
    scale = torch.tensor([[2.0, 0.5], [1.0, 1.5]])
    shift = torch.tensor([[0.1, -0.2], [0.0, 0.3]])
    out = intensity_batch(image, mask, scale, shift)
    expected = image * scale[:, :, None, None, None] + shift[:, :, None, None, None]
    assert torch.allclose(out[mask], expected[mask])
    assert torch.all(out[~mask] == 0)


def test_random_augment_reproducible_and_seed_dependent():
    image, mask = batch()
    params = AugmentParams(spacing=(2.0, 2.0, 4.0))
    first = random_augment(image, mask, params, torch.Generator().manual_seed(5))
    again = random_augment(image, mask, params, torch.Generator().manual_seed(5))
    other = random_augment(image, mask, params, torch.Generator().manual_seed(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.allclose(first[0], other[0])
    assert first[0].shape == image.shape and first[1].dtype == torch.bool


def test_random_augment_with_zero_ranges_is_identity():
    image, mask = batch()
    image = torch.where(mask, image, torch.zeros_like(image))  # invalid voxels are zero, as in the cache
    params = AugmentParams(
        flip_prob=0.0, max_rotation_deg=0.0, scale_range=(1.0, 1.0), intensity_scale=0.0, intensity_shift=0.0
    )
    out, out_mask = random_augment(image, mask, params, torch.Generator().manual_seed(0))
    assert torch.allclose(out, image, atol=1e-5) and torch.equal(out_mask, mask)


def test_missing_modality_stays_empty():
    image, mask = batch()
    image[0, 0], mask[0, 0] = 0.0, False  # case 0 has no T1
    out, out_mask = random_augment(image, mask, AugmentParams(), torch.Generator().manual_seed(1))
    assert torch.all(out[0, 0] == 0) and not out_mask[0, 0].any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flip_prob": 1.5}, "1.5"),
        ({"flip_axes": (3,)}, r"\(3,\)"),
        ({"max_rotation_deg": 90.0}, "90.0"),
        ({"scale_range": (1.2, 0.8)}, r"\(1.2, 0.8\)"),
        ({"intensity_scale": 1.0}, "1.0"),
        ({"spacing": (1.0, 0.0, 1.0)}, r"\(1.0, 0.0, 1.0\)"),
    ],
)
def test_bad_params_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentParams(**kwargs)


def test_shape_mismatch_is_refused():
    image, mask = batch()
    with pytest.raises(ValueError, match="bool mask"):
        flip_batch(image, mask.float(), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        flip_batch(image, mask, torch.zeros(3, 3, dtype=torch.bool))


def test_the_experiments_augmentation_follows_its_config():
    from endofed.config import load_config
    from endofed.errors import ConfigError
    from endofed.training.engine import augment_params
    from tests.helpers import TINY

    cfg = load_config(TINY, ["finetune.flip_axes=[0]", "finetune.max_rotation_deg=0"])
    params = augment_params(cfg)
    assert params.flip_axes == (0,) and params.max_rotation_deg == 0.0
    assert params.spacing == cfg.data.target_spacing
    with pytest.raises(ConfigError, match="finetune.flip_axes must be distinct axes among 0, 1, 2"):
        load_config(TINY, ["finetune.flip_axes=[0, 3]"])
    with pytest.raises(ConfigError, match=r"finetune.max_rotation_deg must be in \[0, 45\]"):
        load_config(TINY, ["finetune.max_rotation_deg=60"])
