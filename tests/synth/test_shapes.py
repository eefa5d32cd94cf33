from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from endofed.data.geometry import make_affine
from endofed.synth.render import _sample, fine_grid_for
from endofed.synth.shapes import Capsule, Ellipsoid, EllipticCylinder, FineGrid, HalfCut, Spiculated, paint, rotation


def _grid(n: int = 21, spacing: float = 1.0) -> FineGrid:
    return FineGrid(origin=np.full(3, -(n - 1) / 2 * spacing), spacing=spacing, shape=(n, n, n))


def test_rotation_is_orthonormal():
    r = rotation(30, -20, 10)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_rotated_ellipsoid_bbox_by_hand():
    # Radii (4, 1, 1) turned 90 degrees about S: its long axis lies along y.
    body = Ellipsoid(np.zeros(3), np.array([4.0, 1.0, 1.0]), rotation(90))
    low, high = body.bbox()
    np.testing.assert_allclose(high, [1, 4, 1], atol=1e-9)
    np.testing.assert_allclose(low, [-1, -4, -1], atol=1e-9)


def test_paint_sphere_volume_and_findings():
    grid = _grid()
    labels = np.zeros(grid.shape, np.uint8)
    findings = np.zeros(grid.shape, np.uint8)
    painted = paint(labels, findings, grid, Ellipsoid(np.zeros(3), np.full(3, 6.0)), tissue=3, finding=2)
    assert painted == int((labels == 3).sum()) == int((findings == 2).sum())
    assert painted == pytest.approx(4 / 3 * np.pi * 6**3, rel=0.05)
    # Painting normal tissue over part of it clears the finding there.
    paint(labels, findings, grid, Ellipsoid(np.zeros(3), np.full(3, 3.0)), tissue=1)
    assert not findings[10, 10, 10] and labels[10, 10, 10] == 1


def test_capsule_and_cylinder_by_hand():
    capsule = Capsule(np.array([0.0, 0, 0]), np.array([10.0, 0, 0]), 2.0)
    x, y, z = (np.array([v]) for v in (5.0, 1.9, 0.0))
    assert capsule.inside(x, y, z)[0] and not capsule.inside(np.array([12.5]), y, z)[0]
    cylinder = EllipticCylinder(0, 0, 4, 2, -1, 1)
    assert cylinder.inside(np.array([3.9]), np.array([0.0]), np.array([0.5]))[0]
    assert not cylinder.inside(np.array([0.0]), np.array([2.1]), np.array([0.0]))[0]
    assert not cylinder.inside(np.array([0.0]), np.array([0.0]), np.array([1.5]))[0]


def test_halfcut_keeps_the_dependent_side():
    body = Ellipsoid(np.zeros(3), np.full(3, 5.0))
    lower = HalfCut(body, np.zeros(3), np.array([0.0, 1.0, 0.0]))  # keeps y <= 0
    assert lower.inside(np.array([0.0]), np.array([-2.0]), np.array([0.0]))[0]
    assert not lower.inside(np.array([0.0]), np.array([2.0]), np.array([0.0]))[0]


def test_spiculated_reaches_beyond_its_body_only_along_spikes():
    body = Ellipsoid(np.zeros(3), np.full(3, 4.0))
    spiky = Spiculated(body, np.array([[1.0, 0.0, 0.0]]), amplitude=0.5)
    assert spiky.inside(np.array([5.5]), np.array([0.0]), np.array([0.0]))[0]  # along the spike
    assert not spiky.inside(np.array([0.0]), np.array([5.5]), np.array([0.0]))[0]  # elsewhere
    assert spiky.bbox()[1][0] >= 6.0


@pytest.mark.parametrize("code", ["PSR", "LAS", "LIP", "RSA"])
def test_separable_sampling_matches_map_coordinates(code):
    rng = np.random.default_rng(0)
    affine = make_affine(code, (1.5, 1.5, 4.4), (20, 18, 7), (3.0, -2.0, 1.0))
    grid = fine_grid_for(affine, (20, 18, 7), 1.5, margin_mm=2.2)
    fine = rng.random(grid.shape).astype(np.float32)
    to_fine = np.linalg.inv(grid.affine()) @ affine
    coords = np.indices((20, 18, 7)).reshape(3, -1).astype(float)
    reference = ndimage.map_coordinates(fine, to_fine[:3, :3] @ coords + to_fine[:3, 3:4], order=1)
    np.testing.assert_allclose(_sample(fine, grid, affine, (20, 18, 7), order=1).ravel(), reference, atol=1e-5)
    nearest = ndimage.map_coordinates(fine, to_fine[:3, :3] @ coords + to_fine[:3, 3:4], order=0)
    np.testing.assert_array_equal(_sample(fine, grid, affine, (20, 18, 7), order=0).ravel(), nearest)
