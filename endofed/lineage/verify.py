"""Model cards on disk: write them next to their checkpoint, read them, and verify them against it.

A checkpoint ``global_encoder_<phase>.safetensors`` has its card in ``global_encoder_<phase>.card.md`` (YAML front
matter + readable body, :func:`endofed.lineage.card.render_markdown`) and ``global_encoder_<phase>.card.json`` (the
same dict). Both are written atomically after the checkpoint; the coordinator rewrites them with every round.

:func:`verify_card` is ``endofed card verify``: it recomputes the tensor file's SHA-256 and checks, in order, that
the card files exist and parse, the card's own hash matches its content, the front matter says the same as the
JSON, the checkpoint file's hash is the card's, the checkpoint's metadata is intact and names the same hashes and
config, and the card's resolved config hashes to its config hash. Like the checkpoint's own hashes these are
checksums, not a signature: they catch an edited, swapped, truncated or stale file, not a forger who recomputes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from endofed.errors import EndofedError
from endofed.federated.protocol import CARD_JSON_SUFFIX, CARD_MD_SUFFIX
from endofed.io.checkpoint import CheckpointError, config_hash, read_metadata
from endofed.io.files import write_text_atomic
from endofed.io.hashing import file_sha256
from endofed.io.jsonl import write_json
from endofed.lineage.card import CARD_HASH, card_sha256, render_markdown


class CardError(EndofedError):
    """A model card is missing, unreadable, or does not match its checkpoint."""


def card_paths(checkpoint: Path) -> tuple[Path, Path]:
    """``(<stem>.card.md, <stem>.card.json)`` of checkpoint ``<stem>.safetensors``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_suffix(CARD_MD_SUFFIX), checkpoint.with_suffix(CARD_JSON_SUFFIX)


def write_card(checkpoint: Path, card: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write the card of ``checkpoint`` as markdown and JSON; returns both paths."""
    md_path, json_path = card_paths(checkpoint)
    write_json(json_path, dict(card), strict=True)
    write_text_atomic(md_path, render_markdown(card))
    return md_path, json_path


def split_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a markdown text (between a first line ``---`` and the next ``---`` line).

    Raises:
        CardError: there is none, or it is not a YAML mapping.
    """
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---" or "---" not in (line.strip() for line in lines[1:]):
        raise CardError("no YAML front matter (the card must start with a '---' line and close it with another)")
    end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        raise CardError(f"the front matter is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CardError("the front matter is not a YAML mapping")
    return data


def read_card(checkpoint: Path) -> dict[str, Any]:
    """The JSON card of ``checkpoint``, after checking its own hash.

    Raises:
        CardError: missing, not JSON, or modified (its ``card_sha256`` differs from its content).
    """
    _, json_path = card_paths(checkpoint)
    if not json_path.is_file():
        raise CardError(
            f"model card {json_path} not found (written by the coordinator next to {Path(checkpoint).name})"
        )
    try:
        card = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"model card {json_path} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or not isinstance(card.get(CARD_HASH), str):
        raise CardError(f"model card {json_path} has no {CARD_HASH}")
    try:
        actual = card_sha256(card)
    except ValueError:
        actual = None
    if actual != card[CARD_HASH]:
        raise CardError(f"model card {json_path} was modified ({CARD_HASH} differs from its content)")
    return card


@dataclass(frozen=True)
class VerifiedCard:
    """A card that matches its checkpoint: the card, and the tensor file's recomputed SHA-256."""

    card: dict[str, Any]
    sha256: str


def _check_checkpoint(checkpoint: Path, card: Mapping[str, Any]) -> str:
    """The checkpoint's recomputed SHA-256, after checking it and its metadata against the card."""
    recorded = card.get("checkpoint", {})
    actual = file_sha256(checkpoint)
    if actual != recorded.get("sha256"):
        raise CardError(
            f"checkpoint {checkpoint} does not match its model card: SHA-256 {actual[:12]}… vs "
            f"{str(recorded.get('sha256'))[:12]}… in the card (modified, or another checkpoint)"
        )
    try:
        metadata = read_metadata(checkpoint)
    except CheckpointError as exc:
        raise CardError(str(exc)) from None
    assert metadata is not None  # the file exists
    for key in ("sha256", "metadata_sha256"):
        if metadata.get(key) != recorded.get(key):
            raise CardError(f"checkpoint metadata of {checkpoint} names another {key} than its model card "
                            "(the card is stale or belongs to another checkpoint)")  # fmt: skip
    if metadata.get("config_hash") != card.get("config", {}).get("sha256"):
        raise CardError(f"checkpoint metadata of {checkpoint} names another config hash than its model card")
    return actual


def verify_card(checkpoint: Path) -> VerifiedCard:
    """Check the card of ``checkpoint`` against it (see the module docstring); returns the verified card.

    Raises:
        CardError: one line naming the file and the first check that failed.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CardError(f"checkpoint {checkpoint} not found")
    md_path, _ = card_paths(checkpoint)
    card = read_card(checkpoint)
    if not md_path.is_file():
        raise CardError(f"model card {md_path} not found")
    try:
        front = split_front_matter(md_path.read_text(encoding="utf-8"))
    except CardError as exc:
        raise CardError(f"model card {md_path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"model card {md_path} is unreadable: {exc}") from None
    if front != card:
        raise CardError(f"model card {md_path} says something else than {card_paths(checkpoint)[1].name}")
    resolved = card.get("config", {}).get("resolved")
    if not isinstance(resolved, dict) or config_hash(resolved) != card["config"].get("sha256"):
        raise CardError(f"model card of {checkpoint}: its resolved config does not hash to its config SHA-256")
    return VerifiedCard(card, _check_checkpoint(checkpoint, card))
