import math

import numpy as np
import pytest

from endofed.compare.tables import (
    ALL_SITES,
    ArmPredictions,
    CompareError,
    check_units,
    fmt,
    format_gain,
    format_interval,
    format_metric,
    format_relative,
    gather,
    metric_table,
    seed_rows,
    summarise,
)
from endofed.compare.units import UnitResult, subsample_labelled
from endofed.data.manifest import Case
from endofed.data.site import CaseResult
from endofed.finetune.bootstrap import seed_bootstrap
from endofed.finetune.metrics import row_metrics


def _rows(probs: dict[str, tuple[int, float]]) -> list[dict]:
    return [{"subject": s, "label": y, "prob": p} for s, (y, p) in probs.items()]


def _unit(name, arm, predictions, seed=0, pretrain=None, finetune=None, fraction=1.0):
    return UnitResult(name, arm, seed, fraction, predictions, pretrain or {}, finetune or {})


TEST_IDS = {"a": ["a1", "a2", "a9"], "b": ["b1", "b2"]}  # a9: an unlabelled test subject


def test_check_units_accepts_clean_units_and_counts():
    units = [
        _unit("s/scratch/a", "scratch", {"a": _rows({"a1": (0, 0.2), "a2": (1, 0.7)})}, finetune={"a": ["a3", "a4"]}),
        _unit(
            "s/pooled",
            "pooled",
            {"a": _rows({"a2": (1, 0.6), "a1": (0, 0.1)}), "b": _rows({"b1": (0, 0.3)})},
            pretrain={"a": ["a3", "a4", "a5"], "b": ["b3"]},
            finetune={"a": ["a3"], "b": ["b3"]},
        ),  # fmt: skip
    ]
    checks = check_units(units, TEST_IDS)
    assert checks == {"units": 2, "test_patients": {"a": 2, "b": 1}, "training_subjects_checked": 2 + 4 + 2}


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        (_unit("u", "local_ssl", {}, pretrain={"a": ["a3", "a9"]}), "test patient 'a9' of site 'a' was used"),
        (_unit("u", "scratch", {}, finetune={"b": ["b2"]}), "test patient 'b2' of site 'b'"),
        (_unit("u", "scratch", {"a": _rows({"a1": (0, 0.2)})}), "other test patients of site 'a'"),
        (_unit("u", "scratch", {"b": _rows({"b7": (0, 0.2)})}), "outside its test split"),
    ],
)
def test_check_units_refuses_leakage_and_unpaired_predictions(unit, message):
    first = _unit("first", "scratch", {"a": _rows({"a1": (0, 0.2), "a2": (1, 0.7)})})
    with pytest.raises(CompareError, match=message):
        check_units([first, unit], TEST_IDS)


def test_gather_stacks_seeds_and_concatenates_sites():
    units = [
        _unit("x", "scratch", {"a": _rows({"a2": (1, 0.9), "a1": (0, 0.2)}), "b": _rows({"b1": (1, 0.4)})}, seed=0),
        _unit("y", "scratch", {"a": _rows({"a1": (0, 0.3), "a2": (1, 0.6)}), "b": _rows({"b1": (1, 0.5)})}, seed=1),
        _unit("z", "pooled", {"a": _rows({"a1": (0, 0.5), "a2": (1, 0.5)})}, seed=0),  # no site b: no all-sites row
        _unit("w", "pooled", {"a": _rows({"a1": (0, 0.4), "a2": (1, 0.4)})}, seed=1),
    ]
    gathered = {(g.site, g.arm): g for g in gather(units, ("scratch", "pooled"))}
    a = gathered[("a", "scratch")]
    assert a.seeds == [0, 1] and a.labels.tolist() == [0, 1]
    np.testing.assert_allclose(a.probs, [[0.2, 0.9], [0.3, 0.6]])  # subjects sorted, one row per seed
    everyone = gathered[(ALL_SITES, "scratch")]
    np.testing.assert_allclose(everyone.probs, [[0.2, 0.9, 0.4], [0.3, 0.6, 0.5]])
    assert (ALL_SITES, "pooled") not in gathered
    rows = {(r["site"], r["arm"]): r for r in summarise(list(gathered.values()), n_boot=0)}
    assert rows[("a", "scratch")]["auc_mean"] == 1.0 and rows[("a", "scratch")]["seeds"] == 2
    assert rows[("a", "pooled")]["auc_gain"] == pytest.approx(0.5 - 1.0)  # a tie vs a perfect ranking
    assert rows[("a", "pooled")]["auc_relative_gain"] == pytest.approx(-0.5)


def _case(subject: str, label: int) -> CaseResult:
    return CaseResult(Case(subject, None, None, label), key="k")


def test_subsample_labelled_is_stratified_seeded_and_keeps_every_class():
    cases = [_case(f"p{i}", 1) for i in range(6)] + [_case(f"n{i}", 0) for i in range(3)]
    half = subsample_labelled(cases, 0.5, seed=1)
    assert sum(r.case.label for r in half) == 3 and sum(1 - r.case.label for r in half) == 2  # round(1.5) = 2
    assert [r.case.subject_id for r in half] == sorted(r.case.subject_id for r in half)
    assert half == subsample_labelled(cases, 0.5, seed=1)
    tiny = subsample_labelled(cases, 0.01, seed=0)
    assert sorted(r.case.label for r in tiny) == [0, 1]  # at least one case per class
    with pytest.raises(ValueError, match="fraction"):
        subsample_labelled(cases, 0.0, seed=0)


def test_formatters():
    assert fmt(0.71234) == "0.712" and fmt(-0.05, signed=True) == "-0.050" and fmt(None) == fmt(math.nan) == "n/a"
    assert format_interval(0.7123, 0.5512, 0.86) == "0.712 [0.551, 0.860]"
    assert format_interval(0.25, -0.1, 0.6, signed=True) == "+0.250 [-0.100, +0.600]"
    assert format_interval(0.5, None, math.nan, sd=0.0204) == "0.500 ± 0.020 [n/a, n/a]"
    assert format_relative(1 / 3) == "+33.3%" and format_relative(-0.25) == "-25.0%"
    assert format_relative(None) == format_relative(math.nan) == "—"
    row = {"auc_mean": 0.6, "auc_sd": 0.1, "auc_low": 0.4, "auc_high": 0.8}
    assert format_metric(row, "auc") == "0.600 [0.400, 0.800]"
    assert format_metric(row, "auc", with_sd=True) == "0.600 ± 0.100 [0.400, 0.800]"
    assert format_gain(row) == "—"
    gain = {"auc_gain": 0.1, "auc_gain_low": -0.05, "auc_gain_high": 0.3, "auc_gain_p": 0.123}
    assert format_gain(gain) == "+0.100 [-0.050, +0.300], p=0.12"


def _arm(arm, probs, site="a"):
    probs = np.atleast_2d(probs)
    return ArmPredictions(site, arm, 1.0, list(range(len(probs))), np.array([0, 0, 1, 1]), probs)


def test_summarise_by_hand_over_seeds():
    scratch = _arm("scratch", [[0.6, 0.2, 0.4, 0.8], [0.1, 0.2, 0.7, 0.9]])  # AUC 0.75 and 1.0
    pooled = _arm("pooled", [[0.1, 0.2, 0.7, 0.9], [0.1, 0.2, 0.7, 0.9]])  # AUC 1.0 twice
    rows = {r["arm"]: r for r in summarise([scratch, pooled], n_boot=0)}
    base, other = rows["scratch"], rows["pooled"]
    assert base["auc_mean"] == pytest.approx(0.875) and base["auc_sd"] == pytest.approx(0.25 / math.sqrt(2))
    assert math.isnan(base["auc_low"]) and "auc_gain" not in base  # no resamples: no interval
    # sensitivity at 0.5: seed 0 finds 1 of 2 positives, seed 1 both -> mean 0.75
    assert base["sensitivity_mean"] == pytest.approx(0.75)
    assert other["auc_gain"] == pytest.approx(1.0 - 0.875) and math.isnan(other["auc_gain_p"])
    assert other["auc_relative_gain"] == pytest.approx(0.125 / 0.875)
    table = metric_table([base, other], ("scratch", "pooled"))
    assert table[1] == ["AUC", "0.875 [n/a, n/a]", "1.000 [n/a, n/a]"]
    assert table[-1] == ["AUC relative gain", "—", "+14.3%"]


def test_seed_rows_resample_each_seed_with_its_own_seed():
    scratch = _arm("scratch", [[0.6, 0.2, 0.4, 0.8], [0.1, 0.2, 0.7, 0.9]])
    rows = seed_rows([scratch], n_boot=20)
    assert [(r["seed"], r["auc"]) for r in rows] == [(0, 0.75), (1, 1.0)]
    for seed, row in enumerate(rows):
        expected = seed_bootstrap(row_metrics, scratch.labels, scratch.probs[seed], 20, seed)["auc"]
        assert (row["auc"], row["auc_low"], row["auc_high"]) == expected
