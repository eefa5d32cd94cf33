"""The compare report lists the model card of each federated arm's encoder, verified when the report is written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from endofed.compare.report import _card_lines
from endofed.config import ExperimentConfig, to_dict
from endofed.io.checkpoint import config_hash, read_metadata, save_checkpoint
from endofed.lineage.card import CardFacts, build_card
from endofed.lineage.passport import passport_metrics, passport_sha256
from endofed.lineage.record import RunLineage
from endofed.lineage.verify import write_card


def _encoder_with_card(folder: Path, phase: str) -> Path:
    cfg = to_dict(ExperimentConfig())
    meta = {"kind": "global_encoder", "phase": phase, "round": 1, "config": cfg, "config_hash": config_hash(cfg)}
    path = save_checkpoint(folder / f"global_encoder_{phase}.safetensors", {"w": torch.ones(2)}, meta)
    lineage = RunLineage()
    lineage.observe_round("pretrain", 1, True, {5: {"num-examples": 3, **passport_metrics({"a": 1})}})
    write_card(path, build_card(path.name, read_metadata(path), lineage, CardFacts(1, 2)))
    return path


def test_each_federated_arms_encoder_card_is_listed_and_a_tampered_one_is_flagged(tmp_path):
    federation = tmp_path / "units" / "seed0" / "federation"
    _encoder_with_card(federation, "pretrain")
    finetuned = _encoder_with_card(federation, "finetune")
    loso = _encoder_with_card(tmp_path / "units" / "seed0" / "loso" / "federation_without_site_b", "pretrain")
    finetuned.write_bytes(finetuned.read_bytes()[:-1] + b"\x00")  # tampered after its card was written
    ctx = SimpleNamespace(out=tmp_path, spec=SimpleNamespace(seeds=(0,), arms=("scratch", "fed_ssl",
                                                                              "fed_ssl_fedprox", "loso")))  # fmt: skip
    lines = _card_lines(ctx)  # type: ignore[arg-type]
    assert lines[0] == "## Model cards of the federated encoders"
    rows = [line for line in lines if line.startswith("| `units/")]
    assert len(rows) == 3
    pretrain, finetune, left_out = rows
    assert "`fed_ssl`, seed 0" in pretrain and "verified" in pretrain
    assert "[card](units/seed0/federation/global_encoder_pretrain.card.md)" in pretrain
    assert f"`{passport_sha256({'a': 1})[:12]}`" in pretrain and "| none |" in pretrain
    assert "`fed_ssl_fedprox`, seed 0" in finetune and "**does not verify**" in finetune
    assert "`loso` at site_b, seed 0" in left_out and str(loso.parent.relative_to(tmp_path)) in left_out
    assert str(tmp_path) not in "\n".join(lines)  # links and reasons name paths relative to the report


def test_no_federated_arm_no_section(tmp_path):
    ctx = SimpleNamespace(out=tmp_path, spec=SimpleNamespace(seeds=(0,), arms=("scratch",)))
    assert _card_lines(ctx) == []  # type: ignore[arg-type]
