"""The benchmark is not decodable from global statistics, its signal exists, and it needs T1 and T2."""

from __future__ import annotations

import numpy as np
import pytest

from endofed.config import load_config
from endofed.data.nifti import Volume
from endofed.synth.cohort import draw_subject, render_subject
from endofed.synth.honesty import (
    BASELINES,
    bag_features,
    baseline_features,
    cross_validated_auc,
    histogram_features,
)
from endofed.synth.profile import load_preset
from tests.helpers import ROOT

N_SUBJECTS = 120  # 40 per demo3 site: small enough for CI, large enough for stable AUCs


def test_bag_features_by_hand():
    candidates = [(1.5, 0.2), (0.7, 1.8), (0.2, 0.7)]  # (T1, T2): high/low, mid/high, low/mid (cuts 0.5, 1)
    both = bag_features(candidates, [0, 1])
    expected = np.zeros(9)
    expected[2 * 3 + 0] = expected[1 * 3 + 2] = expected[0 * 3 + 1] = 1
    np.testing.assert_array_equal(both, expected)
    np.testing.assert_array_equal(bag_features(candidates, [0]), [1, 1, 1])
    np.testing.assert_array_equal(bag_features(candidates, [1]), [1, 1, 1])


def test_histogram_features_sum_to_one_per_channel():
    image = np.random.default_rng(0).random((2, 8, 8, 4))
    mask = np.ones_like(image, dtype=bool)
    features = histogram_features(image, mask, bins=8)
    assert features.shape == (16,)
    assert features[:8].sum() == pytest.approx(1.0) and features[8:].sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def cohort_aucs() -> dict[str, float]:
    cfg = load_config(ROOT / "configs" / "tiny.yaml").data
    sites = load_preset("demo3")
    rows: dict[str, list[np.ndarray]] = {name: [] for name in BASELINES}
    labels = []
    for index in range(N_SUBJECTS):
        site = sites[index % len(sites)]
        rng = np.random.default_rng([0, 99, index])
        spec = draw_subject(rng, site.cohort, f"s{index}")
        acquisitions, _ = render_subject(spec, site, "tiny", rng)
        t1, t2 = acquisitions["T1"], acquisitions["T2"]
        features = baseline_features(
            Volume(t1.image.astype(np.float32), t1.affine, "int16"),
            Volume(t2.image.astype(np.float32), t2.affine, "int16"),
            Volume(t2.findings.astype(np.float32), t2.affine, "uint8"),
            cfg,
        )
        for name in BASELINES:
            rows[name].append(features[name])
        labels.append(spec.label)  # true labels: the most favourable case for every baseline
    y = np.array(labels)
    return {name: cross_validated_auc(np.stack(rows[name]), y, seed=0) for name in BASELINES}


def test_global_histograms_do_not_reveal_the_label(cohort_aucs):
    assert cohort_aucs["histogram"] <= 0.65


def test_the_signal_exists(cohort_aucs):
    assert cohort_aucs["oracle"] >= 0.9


def test_t1_and_t2_together_beat_either_alone(cohort_aucs):
    assert cohort_aucs["cand T1+T2"] > cohort_aucs["cand T1"]
    assert cohort_aucs["cand T1+T2"] > cohort_aucs["cand T2"]
