"""End to end: the model card of an ``endofed-sim`` run's final encoder verifies and names each site's passport."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endofed.cli.main import main as endofed_main
from endofed.cli.sim import main as sim_main
from endofed.data.check import PASSPORT_FILE
from endofed.lineage.passport import passport_sha256
from endofed.lineage.source import git_describe
from tests.helpers import OVERRIDES

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a real simulation: about a minute

ROOT = Path(__file__).resolve().parents[2]
TWO_SITES = """
sites:
  - {name: one, cohort: {subjects: 6, labelled_fraction: 1.0, prevalence: 0.5}}
  - {name: two, cohort: {subjects: 6, labelled_fraction: 1.0, prevalence: 0.5}}
"""


def test_the_final_encoders_card_verifies_and_a_tampered_encoder_does_not(tmp_path, capsys):
    (tmp_path / "profile.yaml").write_text(TWO_SITES)
    assert endofed_main(["synth", "--profile", str(tmp_path / "profile.yaml"), "--out", str(tmp_path / "data")]) == 0
    run = tmp_path / "run"
    args = ["--sites", str(tmp_path / "data"), "--rounds", "1", "--finetune-rounds", "1", "--out", str(run),
            "--app", str(ROOT)]  # fmt: skip
    for item in OVERRIDES:
        args += ["--set", item]
    assert sim_main(args) == 0
    capsys.readouterr()
    final = run / "global_encoder_finetune.safetensors"
    assert endofed_main(["card", "verify", str(final)]) == 0
    assert capsys.readouterr().out.startswith(f"verified: {final} sha256 ")
    card = json.loads((run / "global_encoder_finetune.card.json").read_text())
    assert card["federation"]["rounds_completed"] == {"pretrain": 1, "finetune": 1}
    # the code: the launcher describes its checkout (the ServerApp runs from the bundle, which has no .git)
    assert card["software"]["git_describe"] == git_describe(ROOT) and card["software"]["git_describe"]
    passports = {passport_sha256(json.loads((tmp_path / "data" / s / "work" / PASSPORT_FILE).read_text()))
                 for s in ("one", "two")}  # fmt: skip
    assert {s["passport_sha256"] for s in card["sites"]} == passports  # computed at the sites, sent as metrics
    assert all(s["rounds"] == {"pretrain": 1, "finetune": 1} for s in card["sites"])
    assert len(card["metrics"]["test"]["sites"]) == 2  # the fine-tuning round's test metrics
    assert str(tmp_path) not in (run / "global_encoder_finetune.card.md").read_text()  # no paths
    assert endofed_main(["card", "verify", str(run / "global_encoder_pretrain.safetensors")]) == 0
    data = bytearray(final.read_bytes())
    data[-1] ^= 0x01
    final.write_bytes(bytes(data))
    capsys.readouterr()
    assert endofed_main(["card", "verify", str(final)]) == 1
    assert "does not match its model card" in capsys.readouterr().err
