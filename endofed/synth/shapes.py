"""Analytic 3D shapes in world millimetres, and painting them into a fine label grid (pure numpy).

Every shape knows its world bounding box and answers ``inside(x, y, z)`` for broadcastable coordinate arrays,
so painting evaluates a shape only inside its own box: cost grows with the shape's volume, not the grid's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Shape(Protocol):
    """A solid in world coordinates (mm, RAS+)."""

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """World ``(min, max)`` corners of an axis-aligned box containing the shape."""
        ...

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean array, True where the (broadcast) points are inside."""
        ...


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix: about S (yaw), then R (pitch, tilts A-S), then A (roll, tilts R-S)."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    about_s = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_r = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    about_a = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return about_a @ about_r @ about_s


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with semi-axes ``radii`` along the columns of ``axes`` (a rotation matrix)."""

    centre: np.ndarray
    radii: np.ndarray
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """Tight box of a rotated ellipsoid: half-width_i = sqrt(sum_j (R_ij r_j)^2)."""
        half = np.sqrt(((self.axes * np.asarray(self.radii)) ** 2).sum(axis=1))
        return np.asarray(self.centre) - half, np.asarray(self.centre) + half

    def normalised_radius(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``|R^T (p - c) / r|``: below 1 inside, 1 on the surface."""
        d = (x - self.centre[0], y - self.centre[1], z - self.centre[2])
        total = 0.0
        for j in range(3):
            q = d[0] * self.axes[0, j] + d[1] * self.axes[1, j] + d[2] * self.axes[2, j]
            total = total + (q / self.radii[j]) ** 2
        return np.sqrt(total)

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Points with normalised radius <= 1."""
        return self.normalised_radius(x, y, z) <= 1.0


@dataclass(frozen=True)
class Spiculated:
    """An ellipsoid whose surface is pushed out into spikes along ``directions`` (a spiculated nodule).

    The surface sits at normalised radius ``1 + amplitude * sum_i max(0, u . d_i) ** sharpness`` where ``u`` is
    the unit direction from the centre in the ellipsoid's frame.
    """

    body: Ellipsoid
    directions: np.ndarray  # (K, 3) unit vectors
    amplitude: float
    sharpness: float = 12.0

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """The body's box grown by the largest spike."""
        low, high = self.body.bbox()
        centre = np.asarray(self.body.centre)
        grow = 1.0 + self.amplitude * len(self.directions)
        return centre + (low - centre) * grow, centre + (high - centre) * grow

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Points within the spiked surface."""
        c = self.body.centre
        d = np.broadcast_arrays(x - c[0], y - c[1], z - c[2])
        norm = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) + 1e-9
        bump = np.zeros(d[0].shape)
        for direction in self.directions:
            cosine = (d[0] * direction[0] + d[1] * direction[1] + d[2] * direction[2]) / norm
            bump += np.maximum(cosine, 0.0) ** self.sharpness
        return self.body.normalised_radius(x, y, z) <= 1.0 + self.amplitude * bump


@dataclass(frozen=True)
class EllipticCylinder:
    """Elliptic cylinder along S (body outline): centre ``(cx, cy)``, radii ``(rx, ry)``, from ``z0`` to ``z1``."""

    cx: float
    cy: float
    rx: float
    ry: float
    z0: float
    z1: float

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box."""
        return (
            np.array([self.cx - self.rx, self.cy - self.ry, self.z0]),
            np.array([self.cx + self.rx, self.cy + self.ry, self.z1]),
        )

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Inside the ellipse in (x, y) and between z0 and z1."""
        in_plane = ((x - self.cx) / self.rx) ** 2 + ((y - self.cy) / self.ry) ** 2 <= 1.0
        return in_plane & (z >= self.z0) & (z <= self.z1)


@dataclass(frozen=True)
class Capsule:
    """Points within ``radius`` of the segment from ``a`` to ``b`` (a tube piece with round ends)."""

    a: np.ndarray
    b: np.ndarray
    radius: float

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """Box of the segment grown by the radius."""
        return np.minimum(self.a, self.b) - self.radius, np.maximum(self.a, self.b) + self.radius

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance to the segment <= radius."""
        a, ab = self.a, self.b - self.a
        length2 = float(ab @ ab) or 1e-9
        t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / length2, 0.0, 1.0)
        dist2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
        return dist2 <= self.radius**2


def tube(points: np.ndarray, radius: float) -> list[Capsule]:
    """A tube along a polyline (bowel, rectum, vessels) as one capsule per segment.

    Painting capsule by capsule evaluates each only inside its own small box, which is much cheaper than
    one box around a winding tube.
    """
    points = np.asarray(points, dtype=float)
    return [Capsule(a, b, float(radius)) for a, b in zip(points[:-1], points[1:], strict=True)]


@dataclass(frozen=True)
class HalfCut:
    """The part of ``shape`` on the side of a plane where ``(p - origin) . normal <= 0``."""

    shape: Shape
    origin: np.ndarray
    normal: np.ndarray

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """The uncut shape's box (conservative)."""
        return self.shape.bbox()

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Inside the shape and behind the plane."""
        o, n = self.origin, self.normal
        side = (x - o[0]) * n[0] + (y - o[1]) * n[1] + (z - o[2]) * n[2] <= 0.0
        return self.shape.inside(x, y, z) & side


@dataclass(frozen=True)
class FineGrid:
    """Axis-aligned RAS grid: voxel ``(i, j, k)`` sits at ``origin + spacing * (i, j, k)`` mm."""

    origin: np.ndarray
    spacing: float
    shape: tuple[int, int, int]

    def affine(self) -> np.ndarray:
        """The grid's voxel-to-world affine."""
        out = np.eye(4) * self.spacing
        out[3, 3] = 1.0
        out[:3, 3] = self.origin
        return out

    def block(self, low: np.ndarray, high: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]] | None:
        """Index slices and broadcastable world coordinates of the voxels in a world box (None if empty)."""
        start = np.maximum(np.floor((np.asarray(low) - self.origin) / self.spacing).astype(int), 0)
        stop = np.minimum(np.ceil((np.asarray(high) - self.origin) / self.spacing).astype(int) + 1, self.shape)
        if np.any(stop <= start):
            return None
        slices = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
        coords = []
        for axis in range(3):
            values = self.origin[axis] + self.spacing * np.arange(start[axis], stop[axis], dtype=np.float32)
            view = [1, 1, 1]
            view[axis] = -1
            coords.append(values.reshape(view))
        return slices, coords


def paint(
    labels: np.ndarray, findings: np.ndarray, grid: FineGrid, shape: Shape, tissue: int, finding: int | None = None
) -> int:
    """Set ``labels`` to ``tissue`` (and ``findings`` to ``finding``) inside ``shape``; returns voxels painted.

    With ``finding=None`` the findings map is cleared where painted (normal tissue over a finding), so the
    findings map always marks what is visible.
    """
    block = grid.block(*shape.bbox())
    if block is None:
        return 0
    slices, (x, y, z) = block
    inside = np.broadcast_to(shape.inside(x, y, z), labels[slices].shape)
    labels[slices][inside] = tissue
    findings[slices][inside] = 0 if finding is None else finding
    return int(inside.sum())
