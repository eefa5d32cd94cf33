"""Pure voxel/world geometry: affines, orientation codes, target grids and field-of-view masks.

Conventions are nibabel's: an affine ``A`` (4x4) maps voxel indices ``(i, j, k, 1)`` to world millimetres
in RAS+ (+x towards the patient's Right, +y Anterior, +z Superior). An orientation code such as ``"LAS"`` names
the direction in which array axes 0, 1 and 2 increase. Voxel centres sit at integer indices.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import aff2axcodes, io_orientation

_RAS_AXES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def orientation_code(affine: np.ndarray) -> str:
    """Return the 3-letter orientation code of an affine, e.g. ``"LAS"`` (nibabel's convention)."""
    return "".join(str(c) for c in aff2axcodes(affine))


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis: the column norms of the affine's 3x3 part."""
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def make_affine(
    code: str,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Build an axis-aligned affine with orientation ``code`` whose grid centre lies at ``centre_mm``.

    Args:
        code: orientation code such as ``"RAS"``, ``"LAS"`` or ``"PSR"``.
        spacing: voxel size (mm) along array axes 0, 1, 2.
        shape: grid shape, used to centre the grid.
        centre_mm: world position (RAS+ mm) of the grid's centre.

    Returns:
        ``(4, 4)`` float affine.
    """
    code = code.upper()
    if len(code) != 3 or set(code) - set(_RAS_AXES):
        raise ValueError(f"orientation code must be 3 of R/L/A/P/S/I, got {code!r}")
    axes = [_RAS_AXES[c][0] for c in code]
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"orientation code must name each of the three axes once, got {code!r}")
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for array_axis, letter in enumerate(code):
        world_axis, sign = _RAS_AXES[letter]
        affine[world_axis, array_axis] = sign * float(spacing[array_axis])
    centre_index = (np.asarray(shape, dtype=float) - 1.0) / 2.0
    affine[:3, 3] = np.asarray(centre_mm, dtype=float) - affine[:3, :3] @ centre_index
    return affine


def grid_centre_mm(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World position (mm) of the centre of a voxel grid."""
    centre_index = (np.asarray(shape[:3], dtype=float) - 1.0) / 2.0
    return np.asarray(affine, dtype=float)[:3, :3] @ centre_index + np.asarray(affine, dtype=float)[:3, 3]


def grid_extent_mm(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Field of view (mm) along each array axis: shape times spacing."""
    return np.asarray(shape[:3], dtype=float) * voxel_spacing(affine)


def ras_direction(affine: np.ndarray) -> np.ndarray:
    """Unit direction matrix of ``affine``'s axes, permuted and flipped to be as close to RAS as possible.

    Column ``k`` is the unit world direction of the grid axis that points most nearly along world axis ``k``
    (R, A, S), with its sign chosen to point the positive way. For an axis-aligned grid this is the identity;
    for an oblique acquisition it keeps the obliquity (the T2's slices stay slices).
    """
    affine = np.asarray(affine, dtype=float)
    units = affine[:3, :3] / voxel_spacing(affine)
    ornt = io_orientation(affine)  # row j: (world axis of array axis j, +1/-1)
    direction = np.zeros((3, 3))
    for array_axis, (world_axis, flip) in enumerate(ornt):
        direction[:, int(world_axis)] = units[:, array_axis] * flip
    return direction


def target_grid(
    reference_affine: np.ndarray,
    reference_shape: tuple[int, ...],
    spacing: tuple[float, float, float],
    size: tuple[int, int, int],
) -> np.ndarray:
    """Affine of the output grid: the reference's directions (nearest RAS), ``spacing`` mm, centred on its FOV.

    This single grid folds "orient to RAS, resample to the target spacing, crop/pad to the ROI around the
    centre" into one resampling per modality, so each image is interpolated once.

    Args:
        reference_affine: affine of the reference image (T2, or T1 when T2 is missing).
        reference_shape: its shape (the first three dimensions are used).
        spacing: target voxel size (mm) along R, A, S.
        size: output grid shape.

    Returns:
        ``(4, 4)`` affine of the output grid.
    """
    direction = ras_direction(reference_affine)
    out = np.eye(4)
    out[:3, :3] = direction * np.asarray(spacing, dtype=float)
    centre = grid_centre_mm(reference_affine, reference_shape)
    out[:3, 3] = centre - out[:3, :3] @ ((np.asarray(size, dtype=float) - 1.0) / 2.0)
    return out


def voxel_to_voxel(dst_affine: np.ndarray, src_affine: np.ndarray) -> np.ndarray:
    """Matrix mapping destination voxel indices to source voxel indices through world space."""
    return np.linalg.inv(np.asarray(src_affine, dtype=float)) @ np.asarray(dst_affine, dtype=float)


def fov_mask(
    dst_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    src_affine: np.ndarray,
    src_shape: tuple[int, ...],
) -> np.ndarray:
    """Which destination voxels fall inside the source image's field of view (by world coordinates).

    A destination voxel is inside when its centre maps into the source grid's box
    ``[-0.5, n - 0.5]`` along every source axis (the extent of the source voxels themselves).

    Returns:
        ``bool`` array of shape ``dst_shape``.
    """
    xform = voxel_to_voxel(dst_affine, src_affine)
    axes = [np.arange(n, dtype=np.float32) for n in dst_shape]
    inside = np.ones(dst_shape, dtype=bool)
    for row in range(3):
        # source coordinate along axis `row` = sum_k xform[row, k] * index_k + offset, by broadcasting
        coord = (
            xform[row, 0] * axes[0][:, None, None]
            + xform[row, 1] * axes[1][None, :, None]
            + xform[row, 2] * axes[2][None, None, :]
            + xform[row, 3]
        )
        inside &= (coord >= -0.5) & (coord <= src_shape[row] - 0.5)
    return inside
