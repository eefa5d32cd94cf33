"""Short summaries of model cards for other reports (``endofed compare``): one table row per federated encoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from endofed.federated.protocol import PHASES
from endofed.lineage.verify import CardError, card_paths, verify_card


def card_row(checkpoint: Path, used_by: str, relative_to: Path) -> str:
    """One markdown table row: the encoder, who used it, its SHA-256, a link to its card and the card's key facts.

    The card is verified first (the checkpoint's hash recomputed); a card that does not verify says why instead.
    """
    name = checkpoint.relative_to(relative_to).as_posix()
    link = f"[card]({card_paths(checkpoint)[0].relative_to(relative_to).as_posix()})"
    try:
        verified = verify_card(checkpoint)
    except CardError as exc:
        reason = str(exc).replace(f"{relative_to}/", "").replace("|", "/")  # relative paths, table-safe
        return f"| `{name}` | {used_by} | — | {link} | **does not verify**: {reason} | | | |"
    card = verified.card
    fed, privacy = card["federation"], card.get("privacy")
    rounds = ", ".join(f"{p} {fed['rounds_completed'].get(p, 0)}" for p in PHASES)
    sites = "; ".join(f"{s['node']}: `{(s['passport_sha256'] or 'none')[:12]}`" for s in card["sites"])
    dp = "none" if privacy is None else f"ε={privacy['epsilon']:.3g} (δ={privacy['delta']:g})"
    return f"| `{name}` | {used_by} | `{verified.sha256[:12]}` | {link} | verified | {rounds} | {sites} | {dp} |"


def card_table(rows: Sequence[str]) -> list[str]:
    """The table of :func:`card_row` rows, with its header (empty without rows)."""
    if not rows:
        return []
    return [
        "| encoder | used by | SHA-256 | model card | card check | rounds completed | sites (node: passport "
        "SHA-256) | central DP |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
