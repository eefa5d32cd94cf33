"""``endofed card verify|show CHECKPOINT``: check a global encoder's model card against it, or print the card.

The coordinator writes ``<stem>.card.md`` and ``<stem>.card.json`` next to every global encoder checkpoint
(:mod:`endofed.lineage`). ``verify`` recomputes the checkpoint's SHA-256 and checks the card (exit 0), or says in
one line what does not match (exit 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from endofed.cli.common import EXIT_OK


def register(commands: Any) -> None:
    """Add the ``card`` command group."""
    group = commands.add_parser(
        "card",
        help="the model card of a global encoder checkpoint",
        description="The model card (lineage) the coordinator writes next to every global encoder checkpoint.",
    )
    sub = group.add_subparsers(dest="card_command", metavar="ACTION", required=True)
    verify = sub.add_parser(
        "verify",
        help="recompute the checkpoint's SHA-256 and check its model card",
        description=(
            "Recompute the SHA-256 of CHECKPOINT and check its model card (CHECKPOINT's stem + .card.md and "
            ".card.json): the card's own hash, the markdown front matter against the JSON, the checkpoint's hash "
            "and metadata, and the config hash. Exit 0 if everything matches, 1 with the first mismatch."
        ),
    )
    verify.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a global_encoder_*.safetensors file")
    verify.set_defaults(handler=verify_command)
    show = sub.add_parser("show", help="print the model card (markdown) of a checkpoint after verifying it",
                          description="Verify the card of CHECKPOINT, then print its markdown.")  # fmt: skip
    show.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a global_encoder_*.safetensors file")
    show.set_defaults(handler=show_command)


def verify_command(args: argparse.Namespace) -> int:
    """Verify the card of ``args.checkpoint``; one summary line on stdout."""
    from endofed.lineage.verify import verify_card

    verified = verify_card(args.checkpoint)
    card = verified.card
    ckpt, fed = card["checkpoint"], card["federation"]
    rounds = ", ".join(f"{phase} {count}" for phase, count in fed["rounds_completed"].items())
    print(f"verified: {args.checkpoint} sha256 {verified.sha256} matches its model card ({ckpt['phase']} round "
          f"{ckpt['round']}; rounds {rounds}; {len(card['sites'])} sites)")  # fmt: skip
    return EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    """Verify, then print the markdown card of ``args.checkpoint``."""
    from endofed.lineage.verify import card_paths, verify_card

    verify_card(args.checkpoint)
    print(card_paths(args.checkpoint)[0].read_text(encoding="utf-8"), end="")
    return EXIT_OK
