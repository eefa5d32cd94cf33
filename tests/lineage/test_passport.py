"""The passport hash: canonical form, 32-bit words on the wire and back (hand-computed)."""

from __future__ import annotations

import hashlib

import pytest

from endofed.federated.protocol import PASSPORT_SHA256_KEYS
from endofed.federated.schema import TRAIN, metric_problem
from endofed.lineage.passport import (
    canonical_passport,
    hash_words,
    passport_hash_of,
    passport_metrics,
    passport_sha256,
    words_hash,
)

PASSPORT = {"site_id": "hospital_a", "created_utc": "2026-01-01T00:00:00Z", "cases": {"usable": 3, "total": 4},
            "ready": True}  # fmt: skip


def test_the_canonical_form_leaves_out_who_and_when_and_sorts_keys():
    assert canonical_passport(PASSPORT) == '{"cases":{"total":4,"usable":3},"ready":true}'
    expected = hashlib.sha256(b'{"cases":{"total":4,"usable":3},"ready":true}').hexdigest()
    assert passport_sha256(PASSPORT) == expected
    renamed = {**PASSPORT, "site_id": "elsewhere", "created_utc": "2027-05-05T00:00:00Z"}
    assert passport_sha256(renamed) == expected  # same data, other name and time: same hash
    assert passport_sha256({**PASSPORT, "cases": {"usable": 2, "total": 4}}) != expected


def test_a_passport_that_is_not_strict_json_is_refused():
    with pytest.raises(ValueError, match="strict JSON"):
        passport_sha256({"x": float("nan")})
    with pytest.raises(ValueError, match="mapping"):
        passport_sha256(["not", "a", "dict"])  # type: ignore[arg-type]


def test_hash_words_are_32_bit_big_endian_and_invert():
    digest = "00000001" + "ffffffff" + "0000000a" + "00000000" * 4 + "80000000"
    assert hash_words(digest) == [1, 2**32 - 1, 10, 0, 0, 0, 0, 2**31]
    assert words_hash([1, 2**32 - 1, 10, 0, 0, 0, 0, 2**31]) == digest
    with pytest.raises(ValueError, match="64 hex"):
        hash_words("abc")
    with pytest.raises(ValueError, match="hex digits"):
        hash_words("z" * 64)
    with pytest.raises(ValueError, match="integers"):
        words_hash([2**32] + [0] * 7)


def test_the_metrics_carry_the_hash_and_fit_the_train_schema():
    metrics = passport_metrics(PASSPORT)
    assert list(metrics) == list(PASSPORT_SHA256_KEYS) == [f"passport-sha256-{i}" for i in range(8)]
    assert passport_hash_of(metrics) == passport_sha256(PASSPORT)
    # The coordinator holds every metric as a float: a 32-bit word is exact in float64.
    assert passport_hash_of({k: float(v) for k, v in metrics.items()}) == passport_sha256(PASSPORT)
    assert metric_problem(TRAIN, {"num-examples": 5, **metrics}) is None


@pytest.mark.parametrize(
    "change",
    [{"passport-sha256-3": None}, {"passport-sha256-3": 1.5}, {"passport-sha256-3": -1}, {"passport-sha256-3": 2**32},
     {"passport-sha256-3": True}, {"passport-sha256-3": float("inf")}],
)  # fmt: skip
def test_a_missing_or_malformed_word_gives_no_hash(change):
    metrics = {**passport_metrics(PASSPORT), **change}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    assert passport_hash_of(metrics) is None
