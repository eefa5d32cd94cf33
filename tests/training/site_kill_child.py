"""A real site process for the kill tests: build a FederatedSite, train one pre-training round, print what happened.

Run as ``python -m tests.training.site_kill_child SITE_YAML RUN_KEY ROUND GLOBAL [--kill STEP] [--defer]``:
``GLOBAL`` is a safetensors file of the encoder to train from; ``--defer`` commits after the reply. ``--kill``
arms a fault point of :mod:`endofed.training.site_state` (through ``$ENDOFED_TEST_KILL_AT``), or
``inside-checkpoint``: the tensor file of the round's state is in place, its JSON metadata not yet written. The
process then dies by SIGKILL at that point; otherwise it prints one JSON line: the round its state continued
from, the saved rounds, whether the reply is finite. Test-only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import endofed.io.checkpoint as checkpoint
from endofed.config import load_config, load_site_config
from endofed.federated.protocol import MAE_STATE, PRETRAIN
from endofed.training.federated_site import FederatedSite, RoundPlan
from endofed.training.site_state import KILL_ENV, PARTIAL_PREFIX, STATE_FILE
from tests.helpers import OVERRIDES, TINY

INSIDE_CHECKPOINT = "inside-checkpoint"
TOTAL_ROUNDS = 6


def kill_between_tensors_and_metadata() -> None:
    """SIGKILL once a round's new state tensor file is in place and before its metadata is written.

    ``save_checkpoint`` asks for the metadata's path right after it moved the tensor file into place; reading
    checkpoints asks too, so only a path inside a ``.partial-*`` folder (a write under way) triggers the kill.
    """
    original = checkpoint.metadata_path

    def metadata_path(path: Path) -> Path:
        path = Path(path)
        if path.name == STATE_FILE and path.parent.name.startswith(PARTIAL_PREFIX):
            assert path.is_file(), "the tensor file should be in place before its metadata is asked for"
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path)

    checkpoint.metadata_path = metadata_path  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("site")
    parser.add_argument("run_key")
    parser.add_argument("round", type=int)
    parser.add_argument("encoder")
    parser.add_argument("--kill", default="")
    parser.add_argument("--defer", action="store_true", help="commit after train() returned, as in deployment")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.kill == INSIDE_CHECKPOINT:
        kill_between_tensors_and_metadata()
    elif args.kill:
        os.environ[KILL_ENV] = args.kill
    cfg = load_config(TINY, OVERRIDES)
    site = FederatedSite(load_site_config(Path(args.site)), cfg, args.run_key, defer_commit=args.defer)
    received = {k: v.numpy() for k, v in load_file(args.encoder).items()}
    state, _ = site.train(received, RoundPlan(PRETRAIN, args.round, TOTAL_ROUNDS, local_epochs=1))
    site.wait_for_commits()  # deferred: the reply exists by now, and the kill comes while its round is written
    finite = all(bool(torch.isfinite(v).all()) for v in state.values())
    report = {"restored": site.restored[MAE_STATE], "rounds": site.stores[MAE_STATE].rounds(), "finite": finite}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
