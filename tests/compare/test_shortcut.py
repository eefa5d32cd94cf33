import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from endofed.compare.shortcut import mean_intensities, shortcut_lines, shortcut_rows, spearman
from endofed.compare.tables import ALL_SITES, ArmPredictions


def test_mean_intensities_over_each_channels_valid_voxels():
    image = np.zeros((2, 2, 2, 1), dtype=np.float32)
    mask = np.zeros((2, 2, 2, 1), dtype=np.uint8)
    image[0, :, :, 0] = [[1.0, 3.0], [5.0, 100.0]]  # the 100 lies outside the mask
    mask[0, :, :, 0] = [[1, 1], [1, 0]]
    t1, t2 = mean_intensities(image, mask)
    assert t1 == pytest.approx(3.0)
    assert math.isnan(t2)  # no valid T2 voxel


def test_spearman_by_hand_and_against_scipy():
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0])) == pytest.approx(-0.5)  # d = 2,-1,-1
    assert math.isnan(spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 30).astype(float), rng.normal(size=30)  # ties in a
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)


def _arm(arm, probs, fraction=1.0, site="a"):
    probs = np.atleast_2d(np.asarray(probs, dtype=float))
    labels = np.array([0, 0, 1, 1])
    return ArmPredictions(site, arm, fraction, list(range(len(probs))), labels, probs, ["s1", "s2", "s3", "s4"])


def test_shortcut_rows_by_hand():
    # mean T1 rises with the label (AUC 1.0); mean T2 falls with it (AUC 0.0: as informative, other sign)
    means = {"a": {"s1": (0.1, 0.9), "s2": (0.2, 0.8), "s3": (0.3, 0.7), "s4": (0.4, 0.6)}}
    brightness = _arm("scratch", [[0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.5, 0.6]])  # follows mean T1 exactly
    other = _arm("pooled", [0.9, 0.1, 0.8, 0.2])
    ignored = [
        _arm("scratch", [0.5, 0.5, 0.5, 0.5], fraction=0.5),
        _arm("scratch", [0.1, 0.2, 0.3, 0.4], site=ALL_SITES),
    ]
    (row,) = shortcut_rows([brightness, other, *ignored], means)
    assert row["site"] == "a" and row["n"] == 4
    assert row["auc_T1"] == pytest.approx(1.0) and row["auc_T2"] == pytest.approx(0.0)
    assert row["rho_T1_scratch"] == pytest.approx(1.0) and row["rho_T2_scratch"] == pytest.approx(-1.0)
    assert row["rho_T1_pooled"] == pytest.approx(spearmanr([0.9, 0.1, 0.8, 0.2], [1, 2, 3, 4]).statistic)
    lines = shortcut_lines([row], ["scratch", "pooled"])
    assert lines[0] == "## Shortcut check (mean intensity alone)"
    assert "| a | 4 | 1.000 | 0.000 | 1.00 / -1.00 | -0.40 / 0.40 |" in lines
    assert shortcut_lines([], ["scratch"]) == []
