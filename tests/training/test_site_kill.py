"""A real site process SIGKILLed at each step of its local-state write rejoins with its previous state.

For every write step (``endofed.training.site_state.WRITE_STEPS``, plus inside the state checkpoint: tensor
file in place, metadata not yet written) a fresh process (``tests/training/site_kill_child.py``) trains a round
with the kill armed and must die by SIGKILL there; then another fresh process trains the next round the server
would send and must continue from the last round that was committed, with a finite reply and nothing temporary
left behind.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from endofed.config import load_config, load_site_config
from endofed.federated.weights import encoder_state
from endofed.models import build_mae
from endofed.training.federated_site import FederatedSite, RoundPlan
from endofed.training.site_state import WRITE_STEPS
from tests.helpers import OVERRIDES, ROOT, TINY
from tests.training.site_kill_child import INSIDE_CHECKPOINT, TOTAL_ROUNDS

pytestmark = pytest.mark.integration

RUN_KEY = "kill"
CHILD_S = 120  # one child: imports, the data check against the cache, one tiny round

# step -> (round trained with the kill armed, round the restarted process trains, the round it must continue from).
# The site has rounds 1 and 2 saved. Killed before the new round folder is renamed into place, round 3 never
# happened: its repeat continues from round 2. Killed after, round 3 is committed: round 4 continues from it.
# old-round-aside only happens when a round is repeated: round 2 again, whose repeat continues from round 1.
CASES = {
    "partial-dir": (3, 3, 2),
    "state-written": (3, 3, 2),
    INSIDE_CHECKPOINT: (3, 3, 2),
    "global-written": (3, 3, 2),
    "old-round-aside": (2, 2, 1),
    "round-renamed": (3, 4, 3),
    "pruned": (3, 4, 3),
}


def test_every_write_step_is_covered():
    assert set(WRITE_STEPS) <= set(CASES)


@pytest.fixture(scope="module")
def trained_twice(training_site_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A site (cache filled) that trained pre-training rounds 1 and 2; returns (its root, the encoder file)."""
    root = tmp_path_factory.mktemp("killed") / "site"
    shutil.copytree(training_site_template, root, ignore=shutil.ignore_patterns("work"))
    cfg = load_config(TINY, OVERRIDES)
    site = FederatedSite(load_site_config(root / "site.yaml"), cfg, RUN_KEY)
    model = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(5))
    start = encoder_state(model)
    trained, _ = site.train({k: v.numpy() for k, v in start.items()}, RoundPlan("pretrain", 1, TOTAL_ROUNDS, 1))
    site.train({k: v.numpy() for k, v in trained.items()}, RoundPlan("pretrain", 2, TOTAL_ROUNDS, 1))
    encoder = root.parent / "encoder.safetensors"
    save_file(trained, encoder)  # every later round sends this one: close to what the site saw
    assert site.stores["mae"].rounds() == [1, 2]
    return root, encoder


def _child(
    site: Path, server_round: int, encoder: Path, kill: str = "", defer: bool = False
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "tests.training.site_kill_child", str(site), RUN_KEY, str(server_round), str(encoder)]
    args += (["--kill", kill] if kill else []) + (["--defer"] if defer else [])
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_S)  # noqa: S603


# Committed after the reply (deployment), the same steps run in the commit's thread: one kill before the rename
# and one after are enough to show the thread changes nothing of what a kill leaves.
DEFERRED = ("state-written", "round-renamed")


@pytest.mark.timeout(3 * CHILD_S)
@pytest.mark.parametrize(
    ("step", "defer"),
    [(step, False) for step in CASES] + [(step, True) for step in DEFERRED],
    ids=[*CASES, *(f"{step}-after-reply" for step in DEFERRED)],
)
def test_a_site_killed_at_a_write_step_rejoins_with_its_previous_state(step, defer, trained_twice, tmp_path):
    killed_round, next_round, continues_from = CASES[step]
    root = tmp_path / "site"
    shutil.copytree(trained_twice[0], root)
    site_yaml, encoder = root / "site.yaml", trained_twice[1]
    killed = _child(site_yaml, killed_round, encoder, kill=step, defer=defer)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    mae = root / "work" / "federation" / RUN_KEY / "mae"
    committed = {p.name for p in mae.iterdir() if not p.name.startswith(".")}
    # The kill left the round to continue from whole (a repeated round 2 had moved its first result aside).
    assert f"round-{continues_from:04d}" in committed

    restarted = _child(site_yaml, next_round, encoder, defer=defer)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    report = json.loads(restarted.stdout.strip().splitlines()[-1])
    assert report == {"restored": continues_from, "rounds": [continues_from, next_round], "finite": True}
    assert not [p.name for p in mae.iterdir() if p.name.startswith(".")]  # the partial/discarded folders are gone
