"""Explicit randomness: every seed of a run derives from the global seed and names (ARCHITECTURE.md §5.7).

Pure (hashlib only), so the coordinator, the sites and the comparison derive the same seeds without importing
the training stack.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: str | int) -> int:
    """A stable 63-bit seed from the global seed and names (site id, purpose, fold, round).

    Uses SHA-256, not ``hash()`` (which Python salts per process), so every run and machine agrees.
    """
    text = "/".join([str(seed), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & (2**63 - 1)
