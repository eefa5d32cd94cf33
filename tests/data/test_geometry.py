from __future__ import annotations

import numpy as np
import pytest

from endofed.data.geometry import (
    fov_mask,
    grid_centre_mm,
    make_affine,
    orientation_code,
    ras_direction,
    target_grid,
    voxel_spacing,
)


def test_make_affine_las_by_hand():
    # LAS, spacing (2, 3, 4), shape (3, 3, 3): centre index (1, 1, 1) must land on (10, 20, 30).
    affine = make_affine("LAS", (2.0, 3.0, 4.0), (3, 3, 3), (10.0, 20.0, 30.0))
    expected = np.array([[-2.0, 0, 0, 12.0], [0, 3.0, 0, 17.0], [0, 0, 4.0, 26.0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(affine, expected)
    assert orientation_code(affine) == "LAS"


@pytest.mark.parametrize("code", ["RAS", "LAS", "PSR", "LSP", "IPL", "ASL"])
def test_make_affine_round_trips_orientation_code(code):
    affine = make_affine(code, (0.5, 0.6, 3.6), (10, 12, 5))
    assert orientation_code(affine) == code
    np.testing.assert_allclose(voxel_spacing(affine), [0.5, 0.6, 3.6])
    np.testing.assert_allclose(grid_centre_mm(affine, (10, 12, 5)), [0, 0, 0], atol=1e-9)


@pytest.mark.parametrize("code", ["RAX", "RRS", "RA"])
def test_make_affine_rejects_bad_codes(code):
    with pytest.raises(ValueError, match="orientation code"):
        make_affine(code, (1.0, 1.0, 1.0), (2, 2, 2))


def test_ras_direction_of_psr_is_identity():
    # PSR: axis 0 points P (-y), axis 1 S (+z), axis 2 R (+x). Re-ordered to R, A, S with signs fixed.
    affine = make_affine("PSR", (0.5, 0.5, 4.0), (8, 8, 8))
    np.testing.assert_allclose(ras_direction(affine), np.eye(3), atol=1e-12)


def test_ras_direction_keeps_obliquity():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, 0.5, 3.0])
    direction = ras_direction(affine)
    np.testing.assert_allclose(direction, rotation, atol=1e-12)


def test_target_grid_is_centred_on_the_reference():
    reference = make_affine("LAS", (0.5, 0.5, 3.6), (400, 400, 20), (5.0, -10.0, 30.0))
    grid = target_grid(reference, (400, 400, 20), (1.0, 1.0, 3.0), (128, 128, 32))
    assert orientation_code(grid) == "RAS"
    np.testing.assert_allclose(voxel_spacing(grid), [1.0, 1.0, 3.0])
    np.testing.assert_allclose(grid_centre_mm(grid, (128, 128, 32)), [5.0, -10.0, 30.0], atol=1e-9)


def test_fov_mask_by_hand():
    # Destination: 1 mm RAS grid of 6 voxels along x, origin 0. Source: 2 voxels of 1 mm at x = 2, 3,
    # so its box is x in [1.5, 3.5]: destination voxels 2 and 3 are inside.
    dst = make_affine("RAS", (1.0, 1.0, 1.0), (6, 1, 1))
    dst[:3, 3] = 0.0
    src = np.eye(4)
    src[0, 3] = 2.0
    mask = fov_mask(dst, (6, 1, 1), src, (2, 1, 1))
    assert mask[:, 0, 0].tolist() == [False, False, True, True, False, False]


def test_fov_mask_of_identical_grids_is_full():
    affine = make_affine("PSR", (0.7, 0.7, 3.3), (5, 6, 7))
    assert fov_mask(affine, (5, 6, 7), affine, (5, 6, 7)).all()
