"""The SHA-256 of a site's data passport, and its trip to the coordinator as scalar metrics.

The hash covers the passport's canonical form: the passport without its site id and creation time (JSON, keys
sorted, compact separators), so it names the *data* (counts, label balance, geometry and intensity summaries,
preprocessing digest, endofed version), not who or when, and the same data checked twice hashes the same. Whoever
holds a site's ``passport.json`` recomputes it with :func:`passport_sha256`. The passport is aggregate numbers by
design (no paths, no subject ids); leaving the site id out also keeps the card free of site names.

A reply's metrics are single int64/float64 numbers, so the 256-bit hash travels as 8 words of 32 bits, most
significant first (:data:`endofed.federated.protocol.PASSPORT_SHA256_KEYS`): exact as an int and as a float.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from endofed.federated.protocol import PASSPORT_SHA256_KEYS

NOT_HASHED = ("site_id", "created_utc")  # who and when: not the data
WORD_BITS = 32
WORDS = len(PASSPORT_SHA256_KEYS)  # 8 x 32 = 256 bits
_HEX_PER_WORD = WORD_BITS // 4


def canonical_passport(passport: Mapping[str, Any]) -> str:
    """The passport's canonical JSON text: without :data:`NOT_HASHED`, keys sorted, compact, strict (no NaN).

    Raises:
        ValueError: the passport is not a mapping or not strict JSON.
    """
    if not isinstance(passport, Mapping):
        raise ValueError(f"a data passport must be a mapping, got {type(passport).__name__}")
    body = {key: value for key, value in passport.items() if key not in NOT_HASHED}
    try:
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a data passport must be strict JSON: {exc}") from None


def passport_sha256(passport: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of :func:`canonical_passport`."""
    return hashlib.sha256(canonical_passport(passport).encode("utf-8")).hexdigest()


def hash_words(digest: str) -> list[int]:
    """A 64-hex-digit SHA-256 as 8 integers of 32 bits, most significant first.

    Raises:
        ValueError: ``digest`` is not 64 hex digits.
    """
    if not isinstance(digest, str) or len(digest) != WORDS * _HEX_PER_WORD:
        raise ValueError(f"a SHA-256 must be {WORDS * _HEX_PER_WORD} hex digits, got {digest!r}")
    try:
        return [int(digest[i : i + _HEX_PER_WORD], 16) for i in range(0, len(digest), _HEX_PER_WORD)]
    except ValueError:
        raise ValueError(f"a SHA-256 must be hex digits, got {digest!r}") from None


def words_hash(words: list[int]) -> str:
    """The inverse of :func:`hash_words`.

    Raises:
        ValueError: not 8 integers in ``[0, 2**32)``.
    """
    if len(words) != WORDS or not all(type(w) is int and 0 <= w < 1 << WORD_BITS for w in words):
        raise ValueError(f"expected {WORDS} integers in [0, 2**{WORD_BITS}), got {words!r}")
    return "".join(f"{w:0{_HEX_PER_WORD}x}" for w in words)


def passport_metrics(passport: Mapping[str, Any]) -> dict[str, int]:
    """The metrics a site adds to its train reply: ``{"passport-sha256-0": word, ...}``."""
    return dict(zip(PASSPORT_SHA256_KEYS, hash_words(passport_sha256(passport)), strict=True))


def passport_hash_of(metrics: Mapping[str, Any]) -> str | None:
    """The passport hash in a reply's metrics, or ``None`` when absent or malformed.

    Malformed: a word missing or not a 32-bit integer (the coordinator holds each metric as a float: an integral
    float is taken as its integer).
    """
    words = []
    for key in PASSPORT_SHA256_KEYS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        if value != int(value):
            return None
        words.append(int(value))
    try:
        return words_hash(words)
    except ValueError:
        return None
