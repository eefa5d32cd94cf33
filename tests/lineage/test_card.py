"""Model cards: built from a real checkpoint's metadata, written, verified; tampering fails ``endofed card verify``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from endofed.cli.main import main as endofed_main
from endofed.config import ExperimentConfig, to_dict
from endofed.io.checkpoint import config_hash, read_metadata, save_checkpoint
from endofed.lineage.card import CardFacts, build_card, card_sha256, lineage_of, render_markdown
from endofed.lineage.passport import passport_metrics, passport_sha256
from endofed.lineage.record import RunLineage
from endofed.lineage.verify import CardError, card_paths, split_front_matter, verify_card, write_card

TENSORS = {"blocks.0.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "norm.bias": torch.ones(3)}


def _checkpoint(folder: Path, cfg: ExperimentConfig | None = None, tensors=TENSORS, phase: str = "finetune") -> Path:
    cfg_dict = to_dict(cfg or ExperimentConfig())
    meta = {
        "kind": "global_encoder",
        "phase": phase,
        "round": 2,
        "config": cfg_dict,
        "config_hash": config_hash(cfg_dict),
    }
    return save_checkpoint(folder / f"global_encoder_{phase}.safetensors", tensors, meta)


def _lineage() -> RunLineage:
    lineage = RunLineage()
    for server_round in (1, 2):
        lineage.observe_round("pretrain", server_round, True, {
            11: {"num-examples": 5, "partition-id": 0, **passport_metrics({"site": 1})},
            22: {"num-examples": 6, "partition-id": 1, **passport_metrics({"site": 2})},
        })  # fmt: skip
    return lineage


EVALUATION = {11: {"num-examples": 4.0, "partition-id": 0.0, "auc": 0.75, "balanced_accuracy": 0.5, "sensitivity": 1.0,
                   "specificity": 0.0, "f1": 0.6, "ece": 0.25},
              22: {"num-examples": 3.0, "auc": math.nan, "balanced_accuracy": 1.0, "sensitivity": 1.0,
                   "specificity": 1.0, "f1": 1.0, "ece": 0.05}}  # fmt: skip


def _card(path: Path, **facts) -> dict:
    metadata = read_metadata(path)
    return build_card(path.name, metadata, _lineage(), CardFacts(2, 9, "v0.1-3-gabc", "f" * 64, **facts))


def test_the_card_holds_the_lineage(tmp_path):
    path = _checkpoint(tmp_path)
    card = _card(path, evaluation=EVALUATION, evaluation_source="round 2")
    metadata = read_metadata(path)
    assert card["checkpoint"]["sha256"] == metadata["sha256"] and card["checkpoint"]["file"] == path.name
    assert card["config"] == {"sha256": metadata["config_hash"], "resolved": metadata["config"]}
    assert card["model"]["tensors"] == 2 and card["model"]["parameters"] == 9
    assert card["software"] == {"endofed_version": metadata["endofed_version"], "git_describe": "v0.1-3-gabc",
                                "app_bundle_sha256": "f" * 64}  # fmt: skip
    fed = card["federation"]
    assert fed["rounds_completed"] == {"pretrain": 2, "finetune": 0} and fed["strategy"] == "fedavg"
    assert [(s["node"], s["volumes"], s["rounds"]) for s in card["sites"]] == [
        (11, {"pretrain": 5}, {"pretrain": 2}), (22, {"pretrain": 6}, {"pretrain": 2})]  # fmt: skip
    assert [s["passport_sha256"] for s in card["sites"]] == [passport_sha256({"site": 1}), passport_sha256({"site": 2})]
    assert card["privacy"] is None  # the default config has no DP
    test = card["metrics"]["test"]
    assert test["sites"][1]["auc"] is None and test["sites"][1]["test_patients"] == 3  # NaN: undefined
    assert test["mean_over_sites"]["auc"] == 0.75  # the one defined AUC
    assert test["mean_over_sites"]["balanced_accuracy"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert test["mean_over_sites"]["ece"] == pytest.approx(0.15)  # (0.25 + 0.05) / 2
    (entry,) = card["model-index"]
    assert {m["type"]: m["value"] for m in entry["results"][0]["metrics"]}["auc"] == 0.75
    assert card["card_sha256"] == card_sha256(card)
    text = json.dumps(card)
    assert str(tmp_path) not in text and "site_id" not in text  # no path, no site name
    again = lineage_of(card)  # what a resumed run continues from
    assert again.sites == _lineage().sites and again.rounds_completed == {"pretrain": 2, "finetune": 0}


def test_dp_settings_and_epsilon_are_on_the_card(tmp_path):
    cfg = ExperimentConfig()
    dp = to_dict(cfg)
    dp["federation"] |= {"dp_noise_multiplier": 1.1, "dp_clipping_norm": 0.5, "dp_delta": 1e-5}
    meta = {"kind": "global_encoder", "phase": "pretrain", "round": 1, "config": dp, "config_hash": config_hash(dp)}
    path = save_checkpoint(tmp_path / "global_encoder_pretrain.safetensors", TENSORS, meta)
    card = _card(path, epsilon=2.5, releases=3)
    assert card["privacy"]["noise_multiplier"] == 1.1 and card["privacy"]["clipping_norm"] == 0.5
    assert (card["privacy"]["epsilon"], card["privacy"]["releases"], card["privacy"]["delta"]) == (2.5, 3, 1e-5)
    assert card["metrics"] is None and card["model-index"] == []
    assert "masked image modelling, no labels" in card["intended_use"]


def test_the_markdown_front_matter_is_the_json_card(tmp_path):
    path = _checkpoint(tmp_path)
    card = _card(path, evaluation=EVALUATION, evaluation_source="round 2")
    text = render_markdown(card)
    assert text.startswith("---\nlibrary_name: endofed\n")
    assert split_front_matter(text) == card  # floats, nulls and nesting survive YAML
    assert "## Intended use" in text and "## Limitations" in text and card["checkpoint"]["sha256"] in text
    with pytest.raises(CardError, match="front matter"):
        split_front_matter("# no front matter\n")


def test_a_written_card_verifies(tmp_path, capsys):
    path = _checkpoint(tmp_path)
    md_path, json_path = write_card(path, _card(path))
    assert (md_path.name, json_path.name) == ("global_encoder_finetune.card.md", "global_encoder_finetune.card.json")
    assert card_paths(path) == (md_path, json_path)
    assert verify_card(path).sha256 == read_metadata(path)["sha256"]
    assert endofed_main(["card", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"verified: {path} sha256 ") and "2 sites" in out
    assert endofed_main(["card", "show", str(path)]) == 0
    assert capsys.readouterr().out == md_path.read_text()


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_checkpoint_fails_card_verify(tmp_path, capsys):
    path = _checkpoint(tmp_path)
    write_card(path, _card(path))
    _flip_last_byte(path)  # one tensor byte
    with pytest.raises(CardError, match="does not match its model card: SHA-256"):
        verify_card(path)
    assert endofed_main(["card", "verify", str(path)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("endofed: error: checkpoint ") and "does not match its model card" in line


def test_a_checkpoint_replaced_after_its_card_fails(tmp_path):
    path = _checkpoint(tmp_path)
    write_card(path, _card(path))
    _checkpoint(tmp_path, tensors={**TENSORS, "norm.bias": torch.zeros(3)})  # a later round, card not rewritten
    with pytest.raises(CardError, match="does not match its model card"):
        verify_card(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda card: card["sites"][0].update(volumes={"pretrain": 500}), "was modified"),
        (lambda card: card.pop("card_sha256"), "has no card_sha256"),
    ],
)
def test_an_edited_json_card_fails(tmp_path, edit, message):
    path = _checkpoint(tmp_path)
    _, json_path = write_card(path, _card(path))
    card = json.loads(json_path.read_text())
    edit(card)
    json_path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=message):
        verify_card(path)


def test_an_edited_markdown_card_or_a_missing_one_fails(tmp_path):
    path = _checkpoint(tmp_path)
    md_path, _ = write_card(path, _card(path))
    md_path.write_text(md_path.read_text().replace("library_name: endofed", "library_name: other", 1))
    with pytest.raises(CardError, match="says something else"):
        verify_card(path)
    md_path.unlink()
    with pytest.raises(CardError, match="not found"):
        verify_card(path)


def test_a_card_of_another_config_fails(tmp_path):
    path = _checkpoint(tmp_path)
    card = _card(path)
    card["config"]["resolved"]["seed"] = 99  # the card claims another config than the checkpoint's
    card["card_sha256"] = card_sha256(card)
    write_card(path, card)
    with pytest.raises(CardError, match="resolved config does not hash"):
        verify_card(path)


def test_no_card_and_no_checkpoint_are_one_line_errors(tmp_path, capsys):
    path = _checkpoint(tmp_path)
    with pytest.raises(CardError, match="model card .* not found"):
        verify_card(path)
    capsys.readouterr()
    assert endofed_main(["card", "verify", str(tmp_path / "missing.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err == f"endofed: error: checkpoint {tmp_path / 'missing.safetensors'} not found\n"


def test_a_checkpoint_without_a_content_hash_gets_no_card(tmp_path):
    cfg_dict = to_dict(ExperimentConfig())
    meta = {"kind": "global_encoder", "phase": "pretrain", "round": 1, "config": cfg_dict,
            "config_hash": config_hash(cfg_dict)}  # fmt: skip
    path = save_checkpoint(tmp_path / "local.safetensors", TENSORS, meta, content_hash=False)
    with pytest.raises(ValueError, match="no content hash"):
        build_card(path.name, read_metadata(path, verify_hash=False), RunLineage(), CardFacts(2, 9))
