"""Tissue and lesion relaxation properties (T1, T2 in ms at 1.5 T and 3 T; relative proton density).

Literature values from shared/notes/pelvic-mri-physics.md (de Bazelaire et al., Radiology 2004; Stanisz et
al., MRM 2005; lesion ranges from the ESUR endometriosis literature). Each subject draws its own values
uniformly within each range, so contrast varies between subjects as it does between patients. Values at
other field strengths are interpolated linearly between 1.5 T and 3 T.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class T(IntEnum):
    """Tissue labels of the fine-grid label map (0 = air)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    MARROW = 3
    CORTICAL_BONE = 4
    URINE = 5
    MYOMETRIUM = 6
    JUNCTIONAL_ZONE = 7
    ENDOMETRIUM = 8
    CERVIX = 9
    OVARY_STROMA = 10
    FOLLICLE = 11
    BOWEL_WALL = 12
    BOWEL_GAS = 13
    BOWEL_FLUID = 14
    BOWEL_STOOL = 15
    BLOOD = 16
    ENDOMETRIOMA_UPPER = 17  # endometrioma content, non-dependent part
    ENDOMETRIOMA_DEPENDENT = 18  # endometrioma content, dependent part: darkest on T2 ("shading")
    NODULE = 19  # deep endometriosis nodule / fibrotic tissue (also the obliterated pouch of Douglas)
    NODULE_FOCUS = 20  # haemorrhagic focus inside a nodule
    SIMPLE_CYST = 21
    HAEMORRHAGIC_CYST = 22
    DERMOID_FAT = 23
    DERMOID_FLUID = 24
    FIBROID = 25
    ENDOMETRIOMA_UNIFORM = 26  # endometrioma without T2 shading (a minority): T1 bright, T2 intermediate


@dataclass(frozen=True)
class TissueRange:
    """Ranges ``(low, high)`` a subject's value is drawn from; times in ms.

    Attributes:
        t1_15: T1 at 1.5 T.
        t1_30: T1 at 3 T.
        t2_15: T2 at 1.5 T.
        t2_30: T2 at 3 T.
        pd: relative proton density.
        fat: fraction of the signal that fat suppression removes (1 = pure fat).
    """

    t1_15: tuple[float, float]
    t1_30: tuple[float, float]
    t2_15: tuple[float, float]
    t2_30: tuple[float, float]
    pd: tuple[float, float]
    fat: float = 0.0


def _around(value: float, spread: float = 0.1) -> tuple[float, float]:
    """``value`` +- ``spread`` (fraction)."""
    return (value * (1 - spread), value * (1 + spread))


WATER = TissueRange((2500, 3500), (3000, 4000), (1000, 2000), (1000, 2000), (0.95, 1.0))
FAT_RANGE = TissueRange(_around(340), _around(380), _around(58), _around(68), (0.9, 1.0), fat=1.0)

TISSUES: dict[T, TissueRange] = {
    T.AIR: TissueRange((1000, 1000), (1000, 1000), (1, 1), (1, 1), (0.0, 0.0)),
    T.FAT: FAT_RANGE,
    T.MUSCLE: TissueRange((860, 1010), (900, 1400), (27, 44), (29, 50), (0.7, 0.8)),
    T.MARROW: TissueRange(_around(550), _around(590), _around(49), _around(49), (0.8, 0.9), fat=0.7),
    T.CORTICAL_BONE: TissueRange((1000, 1000), (1000, 1000), (0.5, 1.0), (0.5, 1.0), (0.03, 0.06)),
    T.URINE: WATER,
    T.MYOMETRIUM: TissueRange(_around(1310), _around(1510), _around(117), _around(79), (0.75, 0.85)),
    T.JUNCTIONAL_ZONE: TissueRange(_around(1200), _around(1400), (60, 80), (50, 60), (0.7, 0.8)),
    T.ENDOMETRIUM: TissueRange(_around(1270), _around(1450), _around(101), _around(59), (0.8, 0.9)),
    T.CERVIX: TissueRange(_around(1135), _around(1616), _around(58), _around(83), (0.75, 0.85)),
    T.OVARY_STROMA: TissueRange((1000, 1200), (1200, 1400), (80, 100), (70, 90), (0.75, 0.85)),
    T.FOLLICLE: WATER,
    T.BOWEL_WALL: TissueRange((860, 1010), (900, 1400), (30, 50), (30, 55), (0.7, 0.8)),
    T.BOWEL_GAS: TissueRange((1000, 1000), (1000, 1000), (1, 1), (1, 1), (0.0, 0.0)),
    T.BOWEL_FLUID: WATER,
    T.BOWEL_STOOL: TissueRange((600, 900), (700, 1000), (40, 80), (40, 80), (0.5, 0.7)),
    T.BLOOD: TissueRange(_around(1440), _around(1930), _around(290), _around(275), (0.85, 0.95)),
    T.ENDOMETRIOMA_UPPER: TissueRange((300, 500), (350, 550), (50, 75), (45, 70), (0.85, 0.95)),
    T.ENDOMETRIOMA_DEPENDENT: TissueRange((280, 450), (320, 500), (25, 40), (22, 38), (0.85, 0.95)),
    T.NODULE: TissueRange((1000, 1200), (1100, 1400), (40, 60), (35, 55), (0.6, 0.75)),
    T.NODULE_FOCUS: TissueRange((300, 450), (350, 500), (60, 90), (55, 85), (0.85, 0.95)),
    T.SIMPLE_CYST: WATER,
    T.HAEMORRHAGIC_CYST: TissueRange((350, 600), (400, 650), (150, 300), (140, 280), (0.9, 1.0)),
    T.DERMOID_FAT: FAT_RANGE,
    T.DERMOID_FLUID: TissueRange((1500, 2500), (1800, 2800), (300, 600), (300, 600), (0.9, 1.0)),
    T.FIBROID: TissueRange((1100, 1300), (1250, 1500), (50, 70), (45, 65), (0.7, 0.8)),
    T.ENDOMETRIOMA_UNIFORM: TissueRange((300, 500), (350, 550), (90, 160), (80, 150), (0.85, 0.95)),
}


@dataclass(frozen=True)
class TissueTable:
    """One subject's tissue properties, indexed by label: arrays of length ``len(T)``."""

    t1: np.ndarray
    t2: np.ndarray
    pd: np.ndarray
    fat: np.ndarray


def _at_field(low_high_15: tuple[float, float], low_high_30: tuple[float, float], u: float, field_t: float) -> float:
    """Value at quantile ``u`` of the range, interpolated linearly in field strength between 1.5 and 3 T."""
    v15 = low_high_15[0] + u * (low_high_15[1] - low_high_15[0])
    v30 = low_high_30[0] + u * (low_high_30[1] - low_high_30[0])
    w = min(max((field_t - 1.5) / 1.5, 0.0), 1.0)
    return (1 - w) * v15 + w * v30


def sample_tissues(rng: np.random.Generator, field_t: float) -> TissueTable:
    """Draw one subject's T1/T2/PD per tissue at field strength ``field_t`` (tesla)."""
    if not 0.5 <= field_t <= 7.0:
        raise ValueError(f"field strength must be in [0.5, 7] T, got {field_t!r}")
    n = len(T)
    t1, t2, pd, fat = (np.zeros(n) for _ in range(4))
    for label, rng_ in TISSUES.items():
        t1[label] = _at_field(rng_.t1_15, rng_.t1_30, rng.random(), field_t)
        t2[label] = _at_field(rng_.t2_15, rng_.t2_30, rng.random(), field_t)
        pd[label] = rng_.pd[0] + rng.random() * (rng_.pd[1] - rng_.pd[0])
        fat[label] = rng_.fat
    return TissueTable(t1=t1, t2=t2, pd=pd, fat=fat)
