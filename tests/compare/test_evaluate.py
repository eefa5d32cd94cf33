"""``endofed evaluate`` as the two-arm case of the comparison tables: hand-checked numbers and refusals."""

import math

import pytest

from endofed.compare.evaluate import PRETRAINED, evaluate_runs
from endofed.training.records import Prediction, ResultsError, write_predictions, write_results

LABELS = [0, 0, 1, 1]
SCRATCH = [0.6, 0.2, 0.4, 0.8]  # AUC 3/4 (0.4 ranks below 0.6); at 0.5: sensitivity 1/2, specificity 1/2
PRETRAINED_PROBS = [0.1, 0.2, 0.7, 0.9]  # AUC 1, everything right at 0.5


def write_run(folder, init, probs, config_hash="abc", ids=("a", "b", "c", "d")):
    rows = [Prediction(s, "test", y, p) for s, y, p in zip(ids, LABELS, probs, strict=True)]
    rows.append(Prediction("e", "dev", 1, 0.9))  # only test rows are compared
    write_predictions(folder / "predictions.csv", rows)
    meta = {"init": init, "config_hash": config_hash, "bootstrap": 50, "seed": 0, "site_id": "north"}
    write_results(folder / "results.json", meta)
    return folder


def test_hand_checked_comparison(tmp_path):
    scratch = write_run(tmp_path / "s", "scratch", SCRATCH)
    pretrained = write_run(tmp_path / "p", "pretrained", PRETRAINED_PROBS)
    evaluation = evaluate_runs(scratch, pretrained)
    assert (evaluation.n_cases, evaluation.n_positive, evaluation.bootstrap, evaluation.same_config) == (4, 2, 50, True)
    base, new = evaluation.rows["scratch"], evaluation.rows[PRETRAINED]
    assert base["site"] == "north" and base["seeds"] == 1
    assert base["auc_mean"] == pytest.approx(0.75) and new["auc_mean"] == pytest.approx(1.0)
    assert base["balanced_accuracy_mean"] == pytest.approx(0.5) and new["balanced_accuracy_mean"] == 1.0
    assert new["auc_gain"] == pytest.approx(0.25)
    assert new["auc_gain_low"] <= 0.25 <= new["auc_gain_high"]
    assert new["auc_relative_gain"] == pytest.approx(1 / 3)  # (1 - 0.75) / 0.75
    assert "auc_gain" not in base
    header, *rows = evaluation.table()
    assert header == ["metric", "scratch [95% CI]", "pretrained [95% CI]"]
    assert [r[0] for r in rows][:2] == ["AUC", "balanced accuracy"]
    assert rows[0][1].startswith("0.750 [") and rows[0][2].startswith("1.000 [")
    assert rows[-2][0] == "AUC difference vs scratch (paired)" and rows[-2][1] == "—"
    assert rows[-2][2].startswith("+0.250 [") and ", p=" in rows[-2][2]
    assert rows[-1] == ["AUC relative gain", "—", "+33.3%"]


def test_different_configs_are_flagged(tmp_path):
    scratch = write_run(tmp_path / "s", "scratch", SCRATCH, config_hash="one")
    pretrained = write_run(tmp_path / "p", "pretrained", PRETRAINED_PROBS, config_hash="two")
    assert evaluate_runs(scratch, pretrained).same_config is False


def test_undefined_relative_gain_is_a_dash(tmp_path):
    scratch = write_run(tmp_path / "s", "scratch", [0.9, 0.8, 0.1, 0.2])  # AUC 0: no relative figure
    pretrained = write_run(tmp_path / "p", "pretrained", PRETRAINED_PROBS)
    evaluation = evaluate_runs(scratch, pretrained)
    assert math.isnan(evaluation.rows[PRETRAINED]["auc_relative_gain"])
    assert evaluation.table()[-1] == ["AUC relative gain", "—", "—"]


@pytest.mark.parametrize(
    ("scratch_init", "pretrained_init", "ids", "message"),
    [
        ("scratch", "pretrained", ("a", "b", "c", "x"), "different patients"),
        ("pretrained", "scratch", ("a", "b", "c", "d"), "must be a run fine-tuned from scratch"),
        ("scratch", "scratch", ("a", "b", "c", "d"), "must be a run fine-tuned from a pre-trained encoder"),
    ],
)
def test_mismatched_runs_are_refused(tmp_path, scratch_init, pretrained_init, ids, message):
    scratch = write_run(tmp_path / "s", scratch_init, SCRATCH)
    pretrained = write_run(tmp_path / "p", pretrained_init, PRETRAINED_PROBS, ids=ids)
    with pytest.raises(ResultsError, match=message):
        evaluate_runs(scratch, pretrained)
