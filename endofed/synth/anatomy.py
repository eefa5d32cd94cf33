"""Procedural female pelvis: one subject's anatomy and findings as an ordered list of painted shapes.

World frame: RAS+ millimetres, origin near the centre of the true pelvis (between uterus, ovaries and the
pouch of Douglas), so that an acquisition centred on the pelvis holds every finding. Gravity (supine
patient) points to -y (posterior): fluid levels and the dependent "shading" of endometriomas follow it.

Findings (``F``): positives are endometrioma, deep nodule and pouch-of-Douglas obliteration; mimics are
simple cyst, haemorrhagic cyst, dermoid and fibroid. Mimics are drawn independently of the label, so their
presence says nothing about it; only their appearance in T1 *and* T2 tells them apart from positives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from endofed.synth.shapes import Ellipsoid, EllipticCylinder, Shape, rotation, tube
from endofed.synth.tissues import T


class F(IntEnum):
    """Finding labels of the ground-truth map (0 = none)."""

    NONE = 0
    ENDOMETRIOMA = 1
    DEEP_NODULE = 2
    POD_OBLITERATION = 3
    SIMPLE_CYST = 4
    HAEMORRHAGIC_CYST = 5
    DERMOID = 6
    FIBROID = 7


POSITIVE_FINDINGS = (F.ENDOMETRIOMA, F.DEEP_NODULE, F.POD_OBLITERATION)
MIMICS = (F.SIMPLE_CYST, F.HAEMORRHAGIC_CYST, F.DERMOID, F.FIBROID)
GRAVITY = np.array([0.0, -1.0, 0.0])  # supine: posterior is down


@dataclass(frozen=True)
class Paint:
    """One painting step: ``shape`` gets ``tissue``; ``finding`` marks it in the ground truth."""

    shape: Shape
    tissue: T
    finding: F | None = None


@dataclass(frozen=True)
class AnatomyParams:
    """Cohort-level anatomy distribution (a profile can shift it per site)."""

    fat_thickness_mm: tuple[float, float] = (12.0, 40.0)  # subcutaneous fat (body habitus)
    uterus_scale: tuple[float, float] = (0.75, 1.25)  # uterine size relative to 75 x 50 x 40 mm
    anteverted_fraction: float = 0.8  # share of anteverted (vs retroverted) uteri
    bladder_filling: tuple[float, float] = (0.1, 1.0)  # 0 = empty, 1 = full
    free_fluid_probability: float = 0.3  # physiological fluid in the pouch of Douglas (normal)


@dataclass
class Scene:
    """A subject's paint list plus the geometry later steps need."""

    steps: list[Paint] = field(default_factory=list)
    uterus: Ellipsoid | None = None
    cervix: Ellipsoid | None = None
    ovaries: list[Ellipsoid] = field(default_factory=list)
    rectum_points: np.ndarray | None = None
    rectum_radius: float = 0.0

    def add(self, shape: Shape, tissue: T, finding: F | None = None) -> None:
        """Append one painting step."""
        self.steps.append(Paint(shape, tissue, finding))

    def add_tube(self, points: np.ndarray, radius: float, tissue: T) -> None:
        """Append a tube along a polyline (one capsule per segment)."""
        self.steps.extend(Paint(capsule, tissue) for capsule in tube(points, radius))


def _u(rng: np.random.Generator, low_high: tuple[float, float]) -> float:
    """Uniform draw from a ``(low, high)`` range."""
    return float(rng.uniform(low_high[0], low_high[1]))


def _body(scene: Scene, rng: np.random.Generator, params: AnatomyParams) -> None:
    """Body outline: subcutaneous fat, muscular wall, pelvic (visceral) fat."""
    rx, ry = rng.uniform(150, 185), rng.uniform(105, 135)
    fat = _u(rng, params.fat_thickness_mm)
    wall = rng.uniform(10, 20)
    cy = rng.uniform(-15, -5)
    scene.add(EllipticCylinder(0, cy, rx, ry, -200, 200), T.FAT)
    scene.add(EllipticCylinder(0, cy, rx - fat, ry - fat, -200, 200), T.MUSCLE)
    scene.add(EllipticCylinder(0, cy, rx - fat - wall, ry - fat - wall, -200, 200), T.FAT)


def _bone(scene: Scene, centre: list[float], radii: list[float], axes: np.ndarray, cortex: float = 2.5) -> None:
    """A bone: cortical shell with fatty marrow inside."""
    radii_array = np.asarray(radii, dtype=float)
    scene.add(Ellipsoid(np.asarray(centre, float), radii_array, axes), T.CORTICAL_BONE)
    scene.add(Ellipsoid(np.asarray(centre, float), np.maximum(radii_array - cortex, 1.0), axes), T.MARROW)


def _musculoskeletal(scene: Scene, rng: np.random.Generator) -> None:
    """Pelvic muscles, iliac bones, femoral heads, sacrum, pubic bones and iliac vessels."""
    half_width = rng.uniform(88, 105)
    for side in (-1.0, 1.0):
        scene.add(Ellipsoid(np.array([side * (half_width - 22), 0, -20]), np.array([12, 32, 40])), T.MUSCLE)
        scene.add(Ellipsoid(np.array([side * 40, -82, 5]), np.array([32, 12, 14]), rotation(side * 25)), T.MUSCLE)
        scene.add(Ellipsoid(np.array([side * 55, -25, 60]), np.array([18, 20, 45])), T.MUSCLE)
        _bone(scene, [side * half_width, -5, 0], [16, 38, 55], rotation(0, 0, side * 15))
        _bone(scene, [side * (half_width - 5), 5, -62], [23, 23, 23], np.eye(3))
        _bone(scene, [side * 16, 72, -58], [16, 9, 16], np.eye(3))
        vessel = np.array([[side * 35, -35, 90], [side * 55, -15, 20], [side * 72, 15, -45]])
        scene.add_tube(vessel + rng.normal(0, 2, vessel.shape), float(rng.uniform(4, 6)), T.BLOOD)
    _bone(scene, [0, -92, 15], [45, 16, 55], rotation(0, -30, 0))


def _bladder(scene: Scene, rng: np.random.Generator, params: AnatomyParams) -> None:
    """Bladder anterior to the uterus: muscular wall around urine, size set by filling."""
    filling = _u(rng, params.bladder_filling)
    radii = np.array([22 + 25 * filling, 16 + 18 * filling, 14 + 20 * filling])
    centre = np.array([rng.normal(0, 4), 40 + radii[1] * 0.6, -38 + radii[2] * 0.5])
    scene.add(Ellipsoid(centre, radii + 3.0), T.MUSCLE)
    scene.add(Ellipsoid(centre, radii), T.URINE)


def _uterus(rng: np.random.Generator, params: AnatomyParams) -> tuple[list[Paint], Ellipsoid, Ellipsoid]:
    """Vagina, cervix and uterine body with zonal anatomy; returns (steps, cervix, body), not yet painted."""
    scale = _u(rng, params.uterus_scale)
    anteverted = rng.random() < params.anteverted_fraction
    tilt = rng.uniform(30, 75) if anteverted else rng.uniform(-50, -15)
    axes = rotation(rng.normal(0, 8), tilt, rng.normal(0, 6))  # column 2 is the long axis
    cervix_top = np.array([rng.normal(0, 3), rng.normal(-8, 3), rng.normal(-12, 3)])
    length, width, depth = 75 * scale / 2, 50 * scale / 2, 40 * scale / 2
    body_centre = cervix_top + axes[:, 2] * length * 0.9
    cervix = Ellipsoid(cervix_top - axes[:, 2] * 14, np.array([14.0, 13.0, 20.0]), axes)
    body = Ellipsoid(body_centre, np.array([width, depth, length]), axes)
    thickness = rng.uniform(0.12, 0.3)
    steps = [
        *(Paint(c, T.MUSCLE) for c in tube(np.array([cervix.centre, cervix.centre + [0, -4, -60]]), 11.0)),  # vagina
        Paint(cervix, T.CERVIX),
        Paint(body, T.MYOMETRIUM),
        Paint(Ellipsoid(body_centre, body.radii * [0.55, 0.5, 0.8], axes), T.JUNCTIONAL_ZONE),
        Paint(Ellipsoid(body_centre, body.radii * [0.32, thickness, 0.66], axes), T.ENDOMETRIUM),
    ]
    return steps, cervix, body


def _ovaries(scene: Scene, rng: np.random.Generator) -> None:
    """Two ovaries beside the uterus, each with follicles."""
    assert scene.uterus is not None
    for side in (-1.0, 1.0):
        centre = np.array([side * rng.uniform(32, 48), rng.uniform(-15, 8), scene.uterus.centre[2] + rng.normal(0, 8)])
        ovary = Ellipsoid(centre, np.array([14.0, 10.0, 10.0]) * rng.uniform(0.8, 1.3), rotation(rng.normal(0, 20)))
        scene.add(ovary, T.OVARY_STROMA)
        scene.ovaries.append(ovary)
        for _ in range(rng.integers(3, 10)):
            offset = rng.normal(0, 1, 3)
            offset *= rng.uniform(0, 0.65) / (np.linalg.norm(offset) + 1e-9)
            position = centre + ovary.axes @ (offset * ovary.radii)
            scene.add(Ellipsoid(position, np.full(3, rng.uniform(1.5, 5.0))), T.FOLLICLE)


def _bowel_tube(scene: Scene, rng: np.random.Generator, points: np.ndarray, radius: float) -> None:
    """A bowel segment: wall, then contents (gas, fluid or stool)."""
    scene.add_tube(points, radius, T.BOWEL_WALL)
    content = rng.choice([T.BOWEL_GAS, T.BOWEL_FLUID, T.BOWEL_STOOL], p=[0.35, 0.35, 0.3])
    scene.add_tube(points, radius - rng.uniform(2.5, 4.0), T(content))


def _rectum_and_bowel(
    scene: Scene, rng: np.random.Generator, cervix: Ellipsoid, pod_gap_mm: float, tether_mm: float
) -> None:
    """Rectum/sigmoid behind the cervix with ``pod_gap_mm`` of fat between them, and small-bowel loops.

    ``tether_mm`` pulls the rectosigmoid's middle forward and kinks it towards the uterus (obliteration).
    """
    radius = float(rng.uniform(11, 16))
    posterior = float(cervix.bbox()[0][1])  # posterior-most extent of the cervix
    y = max(posterior - pod_gap_mm - radius, -74.0 + radius)  # stays in front of the sacrum
    points = np.array(
        [
            [0, y - 8, -95],
            [0, y - 4, -45],
            [rng.normal(0, 3), y + 0.3 * tether_mm, -12],
            [-8, y + 4 + tether_mm, 18],
            [-30, y + 18 + 0.5 * tether_mm, 40],
            [-45, -5, 58],
        ]
    )
    scene.rectum_points, scene.rectum_radius = points, radius
    _bowel_tube(scene, rng, points, radius)
    for _ in range(rng.integers(3, 8)):
        start = np.array([rng.uniform(-60, 60), rng.uniform(-30, 40), rng.uniform(35, 75)])
        steps = np.cumsum(rng.normal(0, 18, (5, 3)), axis=0)
        _bowel_tube(scene, rng, start + steps, float(rng.uniform(8, 13)))


def _free_fluid(scene: Scene, rng: np.random.Generator, cervix: Ellipsoid) -> None:
    """A little physiological fluid in the pouch of Douglas, just behind the cervix (a normal finding)."""
    centre = np.array([rng.normal(0, 5), float(cervix.bbox()[0][1]) - 3.0, rng.uniform(-15, 0)])
    scene.add(Ellipsoid(centre, np.array([rng.uniform(6, 15), rng.uniform(2, 5), rng.uniform(4, 10)])), T.URINE)


def build_normal_anatomy(
    rng: np.random.Generator, params: AnatomyParams, pod_gap_mm: float, tether_mm: float = 0.0
) -> Scene:
    """Everything but the findings, in painting order (later steps paint over earlier ones)."""
    scene = Scene()
    _body(scene, rng, params)
    _musculoskeletal(scene, rng)
    uterus_steps, cervix, body = _uterus(rng, params)
    _rectum_and_bowel(scene, rng, cervix, pod_gap_mm, tether_mm)
    _bladder(scene, rng, params)
    scene.steps.extend(uterus_steps)
    scene.uterus, scene.cervix = body, cervix
    _ovaries(scene, rng)
    if rng.random() < params.free_fluid_probability and pod_gap_mm > 3:
        _free_fluid(scene, rng, cervix)
    return scene
