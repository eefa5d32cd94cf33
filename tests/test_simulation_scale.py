"""Ten simulated sites with int8 both ways: every round completes, bytes as the down-link says, sites keep views.

The server sends each round's work to at most 4 sites at a time (``federation.max_in_flight``), so the send window
runs through real Flower: every site must still be in every round.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from endofed.cli.main import main as endofed_main
from endofed.cli.sim import main as sim_main
from endofed.io.checkpoint import load_checkpoint
from tests.helpers import OVERRIDES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SITES = 10


def _profile() -> str:
    sites = [f"  - {{name: s{i:02d}, cohort: {{subjects: 8, labelled_fraction: 1.0, prevalence: 0.5}}}}"
             for i in range(SITES)]  # fmt: skip
    return "sites:\n" + "\n".join(sites) + "\n"


@pytest.mark.slow
def test_ten_sites_with_int8_both_ways_complete_and_send_a_quarter_of_the_bytes(tmp_path, capsys):
    (tmp_path / "profile.yaml").write_text(_profile())
    assert endofed_main(["synth", "--profile", str(tmp_path / "profile.yaml"), "--out", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    args = ["--sites", str(tmp_path / "data"), "--rounds", "3", "--finetune-rounds", "1", "--out", str(run),
            "--app", str(ROOT), "--quiet"]  # fmt: skip
    window = "federation.max_in_flight=4"
    for item in (*OVERRIDES, f"federation.min_sites={SITES}", "federation.transport=delta_int8", window):
        args += ["--set", item]
    assert sim_main(args) == 0
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    train = [r for r in rounds if r["event"] == "train"]
    assert [(r["phase"], r["round"]) for r in train] == [("pretrain", 1), ("pretrain", 2), ("pretrain", 3),
                                                         ("finetune", 1)]  # fmt: skip
    assert all(len(r["sites"]) == SITES and r["failures"] == 0 and not r["rejected"] for r in train)
    tensors, _ = load_checkpoint(run / "global_encoder_finetune.safetensors")
    fp32 = sum(t.numel() * 4 for t in tensors.values())
    int8 = fp32 // 4 + 4 * len(tensors)  # one byte per value and one float32 scale per tensor
    # round 1: nobody holds a base, bf16 to all; then int8 deltas to every site (all answered the round before),
    # also across the phase boundary: fine-tuning round 1 starts from the view pre-training's last round sent
    assert {s["bytes_down"] for s in train[0]["sites"]} == {fp32 // 2}
    assert all(s["bytes_down"] == int8 for r in train[1:] for s in r["sites"])
    assert all(s["bytes_up"] == int8 for r in train for s in r["sites"])
    evaluation = [r for r in rounds if r["event"] == "evaluate"]
    assert len(evaluation) == 1 and len(evaluation[0]["sites"]) == SITES and evaluation[0]["failures"] == 0
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["sites"]) == SITES and summary["send_window"] == 4  # the configured window wins
    # each site kept the weights it received, with the digest the next delta is checked against
    for index in range(SITES):
        (state,) = (tmp_path / "data" / f"s{index:02d}" / "work" / "federation").glob("run-*")
        meta = json.loads((state / "classifier" / "round-0001" / "global.json").read_text())
        assert len(meta["digest"]) == 64
