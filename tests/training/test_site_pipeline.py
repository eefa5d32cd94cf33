import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from endofed.config import load_config, load_site_config, to_dict
from endofed.data.splits import assign_splits
from endofed.errors import DataError
from endofed.io.checkpoint import CheckpointError, config_hash, load_checkpoint, save_checkpoint
from endofed.io.tensorboard import TENSORBOARD_DIR
from endofed.models.factory import build_encoder
from endofed.training import engine
from endofed.training.cohort import load_cohort
from endofed.training.site_finetune import Init, fresh_model, resolve_init
from endofed.training.site_pretrain import pretrain_site
from tests.helpers import OVERRIDES, TINY, config_args, run_cli

LABELS = {"sub-001": 0, "sub-002": 1, "sub-003": 0, "sub-004": 1, "sub-005": 0}
LABELS |= {"sub-006": None, "sub-007": 0, "sub-008": 1, "sub-009": 0, "sub-010": 1}


def tiny_cfg(*extra: str):
    return load_config(TINY, [*OVERRIDES, *extra])


def expected_test_ids(cfg) -> set[str]:
    """The held-out test split, computed from the manifest labels alone (independently of the pipeline)."""
    splits = assign_splits(LABELS, cfg.finetune.test_fraction, cfg.seed)
    return {s for s, split in splits.items() if split == "test"}


def test_manifest_labels_are_what_the_tests_assume(training_site):
    with (training_site.parent / "manifest.csv").open() as handle:
        found = {row["subject_id"]: (int(row["label"]) if row["label"] else None) for row in csv.DictReader(handle)}
    assert found == LABELS


def test_pretraining_excludes_the_test_subjects(training_site, tmp_path, monkeypatch):
    seen: list[str] = []
    original = engine.parts_dataset

    def spy(parts):
        seen.extend(r.case.subject_id for p in parts for r in p.cases)
        return original(parts)

    monkeypatch.setattr(engine, "parts_dataset", spy)  # what the engine trains on
    cfg = tiny_cfg("pretrain.epochs=1")
    test_ids = expected_test_ids(cfg)
    assert len(test_ids) == 2
    path = pretrain_site(load_site_config(training_site), cfg, tmp_path / "out")
    assert set(seen) == set(LABELS) - test_ids  # every other case, the unlabelled sub-006 included
    assert "sub-006" in seen
    _, meta = load_checkpoint(path)
    assert meta["n_volumes"] == 8 and meta["n_test_excluded"] == 2


def test_pretrain_outputs(trained_site):
    out = trained_site.parent / "work" / "pretrain"
    cfg = tiny_cfg()
    tensors, meta = load_checkpoint(out / "encoder.safetensors")
    encoder = build_encoder(cfg.model, cfg.data.roi_size)
    assert set(tensors) == set(encoder.state_dict())  # the encoder only, no decoder
    encoder.load_state_dict(tensors, strict=True)
    passport = json.loads((trained_site.parent / "work" / "passport.json").read_text())
    assert meta["site_id"] == "example" and meta["kind"] == "encoder" and meta["epochs"] == 2
    assert meta["config"] == to_dict(cfg) and meta["config_hash"] == config_hash(to_dict(cfg))
    assert meta["preprocessing_digest"] == passport["preprocessing_digest"]
    assert math.isfinite(meta["final_loss"]) and meta["endofed_version"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1] and lines[-1]["loss"] == pytest.approx(meta["final_loss"])
    assert (out / "reconstruction.png").read_bytes()[:4] == b"\x89PNG"
    board = EventAccumulator(str(out / TENSORBOARD_DIR))  # the CLI's TensorBoard scalars, one point per epoch
    board.Reload()
    assert [e.step for e in board.Scalars("pretrain/loss")] == [0, 1] and "pretrain/lr" in board.Tags()["scalars"]


def read_predictions(run: Path) -> list[dict[str, str]]:
    with (run / "predictions.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_finetune_both_arms_on_the_same_patients(trained_site):
    work = trained_site.parent / "work"
    cfg = tiny_cfg()
    test_ids = expected_test_ids(cfg)
    for arm in ("scratch", "pretrained"):
        rows = read_predictions(work / f"finetune-{arm}")
        assert {r["subject_id"] for r in rows} == test_ids and {r["split"] for r in rows} == {"test"}
        results = json.loads((work / f"finetune-{arm}" / "results.json").read_text())
        assert results["init"] == arm and results["n_test"] == 2 and results["n_dev"] == 7
        assert results["config_hash"] == config_hash(to_dict(cfg))
        assert set(results["test"]) == {"auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "ece"}
        lines = (work / f"finetune-{arm}" / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == cfg.finetune.epochs  # one model, trained on every development case


def test_evaluate_prints_the_comparison(trained_site, capsys):
    work = trained_site.parent / "work"
    capsys.readouterr()
    argv = ["evaluate", "--scratch", str(work / "finetune-scratch"), "--pretrained", str(work / "finetune-pretrained")]
    assert run_cli(argv) == 0
    err = capsys.readouterr().err
    for text in ("AUC", "balanced accuracy", "sensitivity", "specificity", "F1", "ECE", "AUC difference", "relative"):
        assert text in err, text


def test_both_arms_start_identically_but_for_the_encoder(trained_site):
    cfg = tiny_cfg()
    cohort = load_cohort(load_site_config(trained_site), cfg)
    init = resolve_init(trained_site.parent / "work" / "pretrain", cfg, cohort)
    first, second = fresh_model(cfg, init), fresh_model(cfg, init)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert init.state is not None
    for name, tensor in init.state.items():
        assert torch.equal(first.encoder.state_dict()[name], tensor), name
    scratch = fresh_model(cfg, Init("scratch"))
    assert torch.equal(scratch.head.weight, first.head.weight)  # same head initialisation in both arms


def test_checkpoint_from_another_model_config_fails_clearly(trained_site, tmp_path, capsys):
    checkpoint = trained_site.parent / "work" / "pretrain"
    argv = ["finetune", "--site", str(trained_site), "--init", str(checkpoint), "--out", str(tmp_path)]
    capsys.readouterr()
    assert run_cli([*argv, *config_args("model.embed_dim=48")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "another model config" in err and "model.embed_dim 32 vs 48" in err


def test_checkpoint_without_config_that_does_not_fit_fails_clearly(trained_site, tmp_path):
    cfg = tiny_cfg()
    other = build_encoder(tiny_cfg("model.depth=3").model, cfg.data.roi_size)
    path = save_checkpoint(tmp_path / "encoder.safetensors", other.state_dict(), {"note": "no config recorded"})
    cohort = load_cohort(load_site_config(trained_site), cfg)
    with pytest.raises(CheckpointError, match="does not fit this model.*blocks.2"):
        resolve_init(path, cfg, cohort)


def test_encoder_pretrained_with_another_test_split_is_refused(trained_site, tmp_path):
    cfg = tiny_cfg("finetune.test_fraction=0.4")
    assert expected_test_ids(cfg) != expected_test_ids(tiny_cfg())
    cohort = load_cohort(load_site_config(trained_site), cfg)
    with pytest.raises(CheckpointError, match="another held-out test split"):
        resolve_init(trained_site.parent / "work" / "pretrain", cfg, cohort)


def test_missing_checkpoint_fails_clearly(training_site, tmp_path, capsys):
    argv = ["finetune", "--site", str(training_site), "--init", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    assert run_cli([*argv, *config_args()]) == 1
    assert "not found" in capsys.readouterr().err


def test_site_that_is_not_ready_is_refused(training_site, tmp_path):
    broken = training_site.parent / "data" / "sub-003" / "T2.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    with pytest.raises(DataError, match="not ready to train: 9 of 10 cases usable"):
        pretrain_site(load_site_config(training_site), tiny_cfg(), tmp_path)


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_dir", "not found"),
        ("missing_predictions", "predictions.csv not found"),
        ("other_patients", "different patients"),
        ("other_label", "disagree on the label"),
        ("swapped", "must be a run fine-tuned from scratch"),
    ],
)
def test_evaluate_bad_input_gives_one_line(trained_site, tmp_path, capsys, breakage, message):
    work = trained_site.parent / "work"
    scratch = copy_run(work / "finetune-scratch", tmp_path / "scratch")
    pretrained = copy_run(work / "finetune-pretrained", tmp_path / "pretrained")
    rows = read_predictions(pretrained)
    if breakage == "missing_dir":
        shutil.rmtree(pretrained)
    elif breakage == "missing_predictions":
        (pretrained / "predictions.csv").unlink()
    elif breakage in ("other_patients", "other_label"):
        first_test = next(i for i, r in enumerate(rows) if r["split"] == "test")
        if breakage == "other_patients":
            rows[first_test]["subject_id"] = "sub-999"
        else:
            rows[first_test]["label"] = str(1 - int(rows[first_test]["label"]))
        with (pretrained / "predictions.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif breakage == "swapped":
        scratch, pretrained = pretrained, scratch
    capsys.readouterr()
    assert run_cli(["evaluate", "--scratch", str(scratch), "--pretrained", str(pretrained)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("endofed: error:") and err.count("\n") == 0 and message in err
