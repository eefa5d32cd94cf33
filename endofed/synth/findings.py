"""Endometriosis signs and their mimics, placed on a subject's anatomy (sizes from a few mm to ~3 cm).

Each ``add_*`` appends painting steps to a ``Scene`` and returns a record describing what it added (for the
ground-truth table written beside the images; the training pipeline never reads it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from endofed.synth.anatomy import GRAVITY, F, Scene
from endofed.synth.shapes import Ellipsoid, HalfCut, Spiculated, rotation
from endofed.synth.tissues import T


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random orientation."""
    return rotation(*rng.uniform(-180, 180, 3))


def _point_in(body: Ellipsoid, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A point at normalised radius in ``[low, high]`` of an ellipsoid, random direction."""
    direction = rng.normal(0, 1, 3)
    direction /= np.linalg.norm(direction)
    return np.asarray(body.centre) + body.axes @ (direction * rng.uniform(low, high) * np.asarray(body.radii))


def _surface_towards(body: Ellipsoid, direction: np.ndarray) -> np.ndarray:
    """The point of the ellipsoid's surface in world ``direction`` from its centre."""
    unit = direction / np.linalg.norm(direction)
    probe = np.asarray(body.centre) + unit
    scale = float(body.normalised_radius(probe[0:1], probe[1:2], probe[2:3])[0])
    return np.asarray(body.centre) + unit / scale


def _record(finding: F, centre: np.ndarray, radius: float, site: str) -> dict[str, Any]:
    """Ground-truth row for one finding."""
    return {
        "finding": finding.name.lower(),
        "site": site,
        "radius_mm": round(float(radius), 1),
        "centre_mm": [round(float(c), 1) for c in centre],
    }


def _ovary_lesion(
    rng: np.random.Generator, scene: Scene, radius: tuple[float, float], ovary_index: int | None = None
) -> tuple[np.ndarray, Ellipsoid]:
    """Centre and shape of a cystic lesion growing from an ovary (random unless ``ovary_index`` is given)."""
    index = int(rng.integers(len(scene.ovaries))) if ovary_index is None else ovary_index % len(scene.ovaries)
    ovary = scene.ovaries[index]
    r = float(rng.uniform(*radius))
    centre = _point_in(ovary, rng, 0.0, 0.5)
    return centre, Ellipsoid(
        centre, r * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)]), _random_rotation(rng)
    )


def _layered(scene: Scene, body: Ellipsoid, upper: T, dependent: T, level: float, finding: F) -> None:
    """Paint a cyst whose dependent part (towards gravity, below ``level`` x radius) holds other contents."""
    scene.add(body, upper, finding)
    origin = np.asarray(body.centre) - GRAVITY * level * float(np.min(body.radii))
    scene.add(HalfCut(body, origin, -GRAVITY), dependent, finding)


def add_endometrioma(
    scene: Scene, rng: np.random.Generator, shading_probability: float = 0.75, ovary_index: int | None = None
) -> dict[str, Any]:
    """Ovarian endometrioma: T1 bright; on T2 usually dark with a darker dependent layer ("shading").

    A minority (``1 - shading_probability``) show no shading: T2 intermediate, like a haemorrhagic cyst,
    so T1 alone or T2 alone cannot always tell them apart, as in real practice. ``ovary_index`` picks the
    ovary (0 or 1; random when ``None``), so a second endometrioma can be put on the other side.
    """
    centre, body = _ovary_lesion(rng, scene, (4.0, 15.0), ovary_index)
    shaded = bool(rng.random() < shading_probability)
    if shaded:
        _layered(scene, body, T.ENDOMETRIOMA_UPPER, T.ENDOMETRIOMA_DEPENDENT, rng.uniform(-0.3, 0.4), F.ENDOMETRIOMA)
    else:
        scene.add(body, T.ENDOMETRIOMA_UNIFORM, F.ENDOMETRIOMA)
    side = "left" if centre[0] < 0 else "right"  # RAS+: x grows towards the patient's right
    record = _record(F.ENDOMETRIOMA, centre, float(np.max(body.radii)), f"{side}_ovary")
    record["t2_shading"] = shaded
    return record


def _nodule_site(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Where a deep nodule sits: posterior uterus, a uterosacral ligament, or the anterior rectal wall."""
    assert scene.uterus is not None and scene.rectum_points is not None
    site = str(rng.choice(["posterior_uterus", "uterosacral_ligament", "rectal_wall"]))
    if site == "posterior_uterus":
        return _surface_towards(scene.uterus, np.array([rng.normal(0, 0.3), -1.0, rng.normal(-0.3, 0.4)])), site
    if site == "uterosacral_ligament":
        side = rng.choice([-1.0, 1.0])
        return np.array([side * rng.uniform(14, 26), rng.uniform(-38, -26), rng.uniform(-22, -6)]), site
    points = scene.rectum_points
    z = rng.uniform(-15, 12)
    y = float(np.interp(z, points[:, 2], points[:, 1]))
    x = float(np.interp(z, points[:, 2], points[:, 0]))
    return np.array([x, y + scene.rectum_radius, z]), site


def add_deep_nodule(scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    """Deep endometriosis nodule: spiculated, T2 dark, T1 iso to muscle, sometimes with T1-bright foci."""
    centre, site = _nodule_site(scene, rng)
    r = float(rng.uniform(3.0, 12.0))
    body = Ellipsoid(centre, r * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)]), _random_rotation(rng))
    spikes = rng.normal(0, 1, (int(rng.integers(4, 9)), 3))
    spikes /= np.linalg.norm(spikes, axis=1, keepdims=True)
    scene.add(Spiculated(body, spikes, float(rng.uniform(0.3, 0.8))), T.NODULE, F.DEEP_NODULE)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            focus = _point_in(body, rng, 0.0, 0.6)
            scene.add(Ellipsoid(focus, np.full(3, rng.uniform(1.0, 2.5))), T.NODULE_FOCUS, F.DEEP_NODULE)
    return _record(F.DEEP_NODULE, centre, r, site)


def add_pod_obliteration(scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    """Fibrosis filling the rectouterine pouch (the rectum itself is tethered when the anatomy is built)."""
    assert scene.cervix is not None
    cervix_posterior_y = float(scene.cervix.bbox()[0][1])
    centre = np.array([rng.normal(0, 3), cervix_posterior_y - rng.uniform(1, 4), rng.uniform(-15, 2)])
    radii = np.array([rng.uniform(12, 22), rng.uniform(5, 9), rng.uniform(10, 18)])
    spikes = rng.normal(0, 1, (5, 3))
    spikes /= np.linalg.norm(spikes, axis=1, keepdims=True)
    body = Ellipsoid(centre, radii, rotation(rng.normal(0, 10)))
    scene.add(Spiculated(body, spikes, float(rng.uniform(0.1, 0.3))), T.NODULE, F.POD_OBLITERATION)
    return _record(F.POD_OBLITERATION, centre, float(radii.max()), "pouch_of_douglas")


def add_simple_cyst(scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    """Simple / functional ovarian cyst: water-like (T1 dark, T2 very bright)."""
    centre, body = _ovary_lesion(rng, scene, (4.0, 15.0))
    scene.add(body, T.SIMPLE_CYST, F.SIMPLE_CYST)
    return _record(F.SIMPLE_CYST, centre, float(np.max(body.radii)), "ovary")


def add_haemorrhagic_cyst(scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    """Haemorrhagic cyst: T1 bright like an endometrioma, but T2 intermediate-bright without shading."""
    centre, body = _ovary_lesion(rng, scene, (4.0, 15.0))
    scene.add(body, T.HAEMORRHAGIC_CYST, F.HAEMORRHAGIC_CYST)
    return _record(F.HAEMORRHAGIC_CYST, centre, float(np.max(body.radii)), "ovary")


def add_dermoid(scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    """Dermoid: fat (T1 bright, suppressed by fat saturation) over dependent fluid, sometimes a calcification."""
    centre, body = _ovary_lesion(rng, scene, (5.0, 15.0))
    _layered(scene, body, T.DERMOID_FAT, T.DERMOID_FLUID, rng.uniform(-0.5, 0.2), F.DERMOID)
    if rng.random() < 0.5:
        spot = _point_in(body, rng, 0.0, 0.5)
        scene.add(Ellipsoid(spot, np.full(3, rng.uniform(1.5, 3.0))), T.CORTICAL_BONE, F.DERMOID)
    return _record(F.DERMOID, centre, float(np.max(body.radii)), "ovary")


def add_fibroid(scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    """Leiomyoma: well-circumscribed, T2 dark, T1 iso to myometrium, within or bulging from the uterus."""
    assert scene.uterus is not None
    centre = _point_in(scene.uterus, rng, 0.3, 0.95)
    r = float(rng.uniform(4.0, 16.0))
    scene.add(Ellipsoid(centre, np.full(3, r) * rng.uniform(0.85, 1.0, 3), _random_rotation(rng)), T.FIBROID, F.FIBROID)
    return _record(F.FIBROID, centre, r, "uterus")
