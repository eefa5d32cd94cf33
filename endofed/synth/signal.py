"""MR signal equations (pure): spin echo / TSE and spoiled gradient echo, per tissue.

Units: times in ms, flip angle in degrees, proton density relative (0..1). Sources: standard Bloch-equation
steady states, as summarised in shared/notes/pelvic-mri-physics.md.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

T2STAR_FRACTION = 0.7  # T2* ~ 0.6-0.8 T2 in the pelvis at these field strengths


def spin_echo(pd: ArrayLike, t1: ArrayLike, t2: ArrayLike, tr: float, te: float) -> np.ndarray:
    """Spin-echo / TSE magnitude: ``PD * (1 - exp(-TR/T1)) * exp(-TE/T2)``."""
    if tr <= 0 or te < 0:
        raise ValueError(f"spin echo needs TR > 0 and TE >= 0, got TR={tr!r}, TE={te!r}")
    pd, t1, t2 = (np.asarray(v, dtype=np.float64) for v in (pd, t1, t2))
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


def spoiled_gradient_echo(
    pd: ArrayLike, t1: ArrayLike, t2: ArrayLike, tr: float, te: float, flip_deg: float
) -> np.ndarray:
    """Spoiled GRE (FLASH / VIBE) magnitude: ``PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)``.

    ``E1 = exp(-TR/T1)`` and ``T2* = T2STAR_FRACTION * T2``.
    """
    if tr <= 0 or te < 0 or not 0 < flip_deg < 180:
        raise ValueError(f"spoiled GRE needs TR > 0, TE >= 0, 0 < flip < 180, got {tr!r}, {te!r}, {flip_deg!r}")
    pd, t1, t2 = (np.asarray(v, dtype=np.float64) for v in (pd, t1, t2))
    alpha = np.deg2rad(flip_deg)
    e1 = np.exp(-tr / t1)
    return pd * np.sin(alpha) * (1.0 - e1) / (1.0 - np.cos(alpha) * e1) * np.exp(-te / (T2STAR_FRACTION * t2))
