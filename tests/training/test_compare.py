import pytest

from endofed.training.compare import compare_results, comparison_rows, format_comparison
from endofed.training.records import Prediction, write_predictions, write_results

LABELS = [0, 0, 1, 1]
SCRATCH = [0.6, 0.2, 0.4, 0.8]  # AUC 3/4 (0.4 ranks below 0.6); at 0.5: sensitivity 1/2, specificity 1/2
PRETRAINED = [0.1, 0.2, 0.7, 0.9]  # AUC 1, everything right at 0.5


def write_run(folder, init, probs, config_hash="abc", ids=("a", "b", "c", "d")):
    rows = [Prediction(s, "test", "ensemble", y, p) for s, y, p in zip(ids, LABELS, probs, strict=True)]
    rows.append(Prediction("e", "dev", "0", 1, 0.9))  # dev rows are not compared
    write_predictions(folder / "predictions.csv", rows)
    write_results(folder / "results.json", {"init": init, "config_hash": config_hash, "bootstrap": 50, "seed": 0})
    return folder


def test_hand_checked_comparison(tmp_path):
    scratch = write_run(tmp_path / "s", "scratch", SCRATCH)
    pretrained = write_run(tmp_path / "p", "pretrained", PRETRAINED)
    result = compare_results(scratch, pretrained)
    assert result["n_cases"] == 4 and result["n_positive"] == 2 and result["same_config"]
    assert result["scratch"]["auc"]["value"] == pytest.approx(0.75)
    assert result["pretrained"]["auc"]["value"] == pytest.approx(1.0)
    assert result["scratch"]["balanced_accuracy"]["value"] == pytest.approx(0.5)
    assert result["auc_difference"]["value"] == pytest.approx(0.25)
    assert result["auc_difference"]["low"] <= 0.25 <= result["auc_difference"]["high"]
    assert result["relative_improvement"]["auc"] == pytest.approx(1 / 3)  # (1 - 0.75) / 0.75
    assert result["relative_improvement"]["balanced_accuracy"] == pytest.approx(1.0)
    assert "ece" not in result["relative_improvement"]
    text = format_comparison(result)
    assert "0.750 [" in text and "+33.3%" in text and "4 test patients (2 positive)" in text
    assert [row[0] for row in comparison_rows(result)][:2] == ["AUC", "balanced accuracy"]


def test_different_configs_are_flagged(tmp_path):
    scratch = write_run(tmp_path / "s", "scratch", SCRATCH, config_hash="one")
    pretrained = write_run(tmp_path / "p", "pretrained", PRETRAINED, config_hash="two")
    assert compare_results(scratch, pretrained)["same_config"] is False


def test_undefined_relative_improvement_is_none(tmp_path):
    scratch = write_run(tmp_path / "s", "scratch", [0.9, 0.8, 0.1, 0.2])  # AUC 0: no relative figure
    pretrained = write_run(tmp_path / "p", "pretrained", PRETRAINED)
    result = compare_results(scratch, pretrained)
    assert result["relative_improvement"]["auc"] is None
    assert "n/a" in format_comparison(result)


def test_patients_must_match(tmp_path):
    scratch = write_run(tmp_path / "s", "scratch", SCRATCH)
    pretrained = write_run(tmp_path / "p", "pretrained", PRETRAINED, ids=("a", "b", "c", "x"))
    with pytest.raises(ValueError, match="different patients"):
        compare_results(scratch, pretrained)
