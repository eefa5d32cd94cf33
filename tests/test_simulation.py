"""Simulation smoke test: 3 synthetic sites, 2 pre-training rounds + 1 fine-tuning round, real Ray engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from endofed.cli.main import main as endofed_main
from endofed.cli.sim import main as sim_main
from endofed.io.checkpoint import load_checkpoint
from endofed.launch.simulation import simulation_parallel
from endofed.site_config import usable_cores
from tests.helpers import OVERRIDES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PROFILE = """
sites:
  - {name: one, cohort: {subjects: 8, labelled_fraction: 1.0, prevalence: 0.5}}
  - {name: two, field_strength: 3.0, cohort: {subjects: 8, labelled_fraction: 1.0, prevalence: 0.5}}
  - {name: three, cohort: {subjects: 8, labelled_fraction: 1.0, prevalence: 0.5},
     t2: {plane: axial, orientation: LAS, in_plane_mm: 0.6, slice_mm: 4.0, fov_mm: [220, 200], slices: 18}}
"""


def _scalars(folder: Path) -> dict[str, list[int]]:
    """The scalar tags of a TensorBoard folder and each tag's steps, read by TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(folder))
    board.Reload()
    return {tag: [event.step for event in board.Scalars(tag)] for tag in board.Tags()["scalars"]}


@pytest.mark.slow
def test_three_site_simulation_completes(tmp_path, capsys):
    (tmp_path / "profile.yaml").write_text(PROFILE)
    assert endofed_main(["synth", "--profile", str(tmp_path / "profile.yaml"), "--out", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    args = [
        "--sites",
        str(tmp_path / "data"),
        "--rounds",
        "2",
        "--finetune-rounds",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--app",
        str(ROOT),
        "--set",
        "federation.min_sites=3",
    ]
    for item in OVERRIDES:
        args += ["--set", item]
    assert sim_main(args) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("one", "two", "three"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["sites"]) == 3 and summary["finetune"] == "federated"
    # no max_in_flight: one message beyond the sites Ray runs at once (1 CPU each)
    assert summary["send_window"] == simulation_parallel(3, 1.0, usable_cores()) + 1
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    train = [r for r in rounds if r["event"] == "train"]
    assert [(r["phase"], r["round"]) for r in train] == [("pretrain", 1), ("pretrain", 2), ("finetune", 1)]
    assert all(len(r["sites"]) == 3 and r["failures"] == 0 for r in train)
    assert all(site["bytes_up"] == site["bytes_down"] > 0 for r in train for site in r["sites"])
    tensors, meta = load_checkpoint(tmp_path / "run" / "global_encoder_finetune.safetensors")
    assert meta["phase"] == "finetune" and not any(k.startswith(("decoder", "head")) for k in tensors)
    # Every message each site sent is in its outgoing audit log: the encoder (fp32, packed into one array), numbers.
    assert len(tensors) > 1
    for site in ("one", "two", "three"):
        (log,) = (tmp_path / "data" / site / "work" / "federation").glob("run-*/outgoing.jsonl")
        sent = [json.loads(line) for line in log.read_text().splitlines()]
        assert [m["message"] for m in sent] == ["train", "train", "train", "evaluate"]
        assert [m["arrays"] for m in sent] == [1] * 3 + [0]
    # TensorBoard (on by default): the server's global and per-site scalars per round, each site's per epoch.
    server_board = _scalars(tmp_path / "run" / "tensorboard" / "global")
    assert {"pretrain/loss", "pretrain/bytes_up", "pretrain/round_seconds", "finetune-eval/ece"} <= set(server_board)
    assert server_board["pretrain/loss"] == [1, 2]
    assert {"pretrain/loss", "pretrain/update_norm_ratio"} <= set(_scalars(tmp_path / "run" / "tensorboard" / "site-0"))
    for site in ("one", "two", "three"):
        (board,) = (tmp_path / "data" / site / "work" / "federation").glob("run-*/tensorboard")
        assert {"pretrain/loss", "pretrain/lr", "finetune/loss", "finetune/lr"} <= set(_scalars(board))
    # The private SuperLink was ended by PID: nothing listens any more on its database.
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "run" / "superlink.db")], capture_output=True)
    assert leftover.returncode == 1


@pytest.mark.slow
def test_central_dp_reports_the_privacy_budget_every_round(tmp_path, capsys):
    from endofed.federated.privacy import epsilon_after

    profile = "sites:\n" + "\n".join(PROFILE.strip().splitlines()[1:3])  # sites one and two
    (tmp_path / "profile.yaml").write_text(profile)
    assert endofed_main(["synth", "--profile", str(tmp_path / "profile.yaml"), "--out", str(tmp_path / "data")]) == 0
    dp = ["federation.dp_noise_multiplier=1.1", "federation.dp_clipping_norm=0.5", "federation.dp_delta=1e-5"]
    args = ["--sites", str(tmp_path / "data"), "--rounds", "2", "--finetune-rounds", "1", "--out",
            str(tmp_path / "run"), "--app", str(ROOT)]  # fmt: skip
    for item in (*OVERRIDES, *dp):
        args += ["--set", item]
    assert sim_main(args) == 0
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    privacy = [r for r in rounds if r["event"] == "privacy"]
    assert [(r["phase"], r["round"]) for r in privacy] == [("pretrain", 1), ("pretrain", 2), ("finetune", 1)]
    # One budget over both phases: epsilon after k releases of the Gaussian mechanism with z = 1.1.
    assert [r["epsilon"] for r in privacy] == pytest.approx([epsilon_after(1.1, k, 1e-5) for k in (1, 2, 3)])
    assert all(r["released"] and len(r["update_norms"]) == 2 and r["clipping_norm"] == 0.5 for r in privacy)
    assert all(norm > 0 for r in privacy for norm in r["update_norms"])
    assert _scalars(tmp_path / "run" / "tensorboard" / "global")["pretrain-privacy/epsilon"] == [1, 2]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["sites"]) == 2


TWO_SITES = """
sites:
  - {name: one, cohort: {subjects: 6, labelled_fraction: 1.0, prevalence: 0.5}}
  - {name: two, cohort: {subjects: 6, labelled_fraction: 1.0, prevalence: 0.5}}
"""


@pytest.mark.slow
def test_a_run_where_every_update_is_rejected_fails_with_the_server_apps_reason_in_one_line(tmp_path, capsys):
    (tmp_path / "profile.yaml").write_text(TWO_SITES)
    assert endofed_main(["synth", "--profile", str(tmp_path / "profile.yaml"), "--out", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    args = ["--sites", str(tmp_path / "data"), "--rounds", "1", "--finetune-rounds", "0", "--out", run,
            "--app", str(ROOT), "--set", "federation.max_examples_per_site=1"]  # fmt: skip
    for item in OVERRIDES:
        args += ["--set", item]
    assert sim_main(args) == 1  # each site has 5 training volumes: every update is above the bound
    captured = capsys.readouterr()
    console = captured.out + captured.err
    assert "Traceback" not in console
    (error,) = [line for line in captured.err.splitlines() if line.startswith("endofed: error:")]
    assert "ended 'finished:failed'" in error and "pretrain: no round had a valid site update" in error
    assert f"details in {tmp_path / 'run' / 'logs' / 'flwr-run.log'}" in error
    assert "Traceback (most recent call last)" in (tmp_path / "run" / "logs" / "flwr-run.log").read_text()
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    (train,) = [r for r in rounds if r["event"] == "train"]
    assert train["aggregated"] is False and len(train["rejected"]) == 2
