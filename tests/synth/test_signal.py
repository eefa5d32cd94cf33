from __future__ import annotations

import numpy as np
import pytest

from endofed.synth.signal import T2STAR_FRACTION, spin_echo, spoiled_gradient_echo
from endofed.synth.tissues import TISSUES, T, sample_tissues


def test_spin_echo_by_hand():
    # PD 0.8, T1 1000, T2 100, TR 2000, TE 50: 0.8 * (1 - e^-2) * e^-0.5
    expected = 0.8 * (1 - np.exp(-2.0)) * np.exp(-0.5)
    assert spin_echo(0.8, 1000.0, 100.0, tr=2000.0, te=50.0) == pytest.approx(expected)


def test_spoiled_gre_by_hand():
    # PD 1, T1 500, T2 50, TR 5, TE 2, flip 15 deg
    e1 = np.exp(-5.0 / 500.0)
    a = np.deg2rad(15.0)
    expected = np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-2.0 / (T2STAR_FRACTION * 50.0))
    assert spoiled_gradient_echo(1.0, 500.0, 50.0, tr=5.0, te=2.0, flip_deg=15.0) == pytest.approx(expected)


def test_gre_ernst_angle_maximises_signal():
    t1, tr = 900.0, 5.0
    ernst = np.rad2deg(np.arccos(np.exp(-tr / t1)))
    angles = np.linspace(1, 40, 391)
    signal = [spoiled_gradient_echo(1.0, t1, 1e9, tr, 0.0, a) for a in angles]
    assert abs(angles[int(np.argmax(signal))] - ernst) < 0.2


@pytest.mark.parametrize("bad", [{"tr": 0.0, "te": 10.0}, {"tr": 100.0, "te": -1.0}])
def test_spin_echo_rejects_bad_timing(bad):
    with pytest.raises(ValueError, match="spin echo needs"):
        spin_echo(1.0, 1000.0, 100.0, **bad)


def test_contrast_directions_of_the_key_tissues():
    """The textbook contrasts emerge from the equations, not from grey levels."""
    tissues = sample_tissues(np.random.default_rng(0), 1.5)

    def t2w(label: T) -> float:
        return float(spin_echo(tissues.pd[label], tissues.t1[label], tissues.t2[label], 4000.0, 100.0))

    def t1w(label: T) -> float:
        return float(spin_echo(tissues.pd[label], tissues.t1[label], tissues.t2[label], 550.0, 10.0))

    assert t1w(T.ENDOMETRIOMA_UPPER) > 1.5 * t1w(T.MUSCLE)  # endometrioma: T1 bright
    assert t2w(T.ENDOMETRIOMA_DEPENDENT) < 0.3 * t2w(T.URINE)  # ... T2 dark (shading)
    assert t1w(T.SIMPLE_CYST) < t1w(T.MUSCLE) and t2w(T.SIMPLE_CYST) > 2 * t2w(T.MYOMETRIUM)  # water
    assert t1w(T.HAEMORRHAGIC_CYST) > 1.5 * t1w(T.MUSCLE) and t2w(T.HAEMORRHAGIC_CYST) > 2 * t2w(T.ENDOMETRIOMA_UPPER)
    assert t2w(T.FIBROID) < 0.7 * t2w(T.MYOMETRIUM)
    assert t2w(T.JUNCTIONAL_ZONE) < t2w(T.ENDOMETRIUM)


def test_sample_tissues_stays_in_range_and_interpolates_field():
    low = sample_tissues(np.random.default_rng(1), 1.5)
    high = sample_tissues(np.random.default_rng(1), 3.0)
    for label, rng_ in TISSUES.items():
        assert rng_.t1_15[0] <= low.t1[label] <= rng_.t1_15[1]
        assert rng_.t1_30[0] <= high.t1[label] <= rng_.t1_30[1]
    with pytest.raises(ValueError, match="field strength"):
        sample_tissues(np.random.default_rng(0), 11.7)
