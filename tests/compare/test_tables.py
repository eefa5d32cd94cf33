import numpy as np
import pytest

from endofed.compare.local import subsample_labelled
from endofed.compare.tables import ALL_SITES, CompareError, check_units, gather, summarise
from endofed.compare.units import UnitResult
from endofed.data.manifest import Case
from endofed.data.site import CaseResult


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
