"""Round bookkeeping by hand: bounded wait for sites, quorum, reply order, which saved state a round resumes."""

from __future__ import annotations

import numpy as np
import pytest

from endofed.federated.rounds import (
    QuorumError,
    completed_rounds,
    round_can_start,
    site_state_to_resume,
    update_digest,
)


@pytest.mark.parametrize(
    ("connected", "waited", "expected"),
    [
        (3, 0.0, True),  # every site is there: go at once
        (2, 10.0, False),  # one missing and still within the wait: keep waiting
        (2, 60.0, True),  # wait over and the quorum (2) is there: go on without the third
        (4, 0.0, True),  # more sites than expected is fine
    ],
)
def test_round_starts_with_every_site_or_a_quorum_after_the_wait(connected, waited, expected):
    assert round_can_start(connected, wanted=3, quorum=2, waited_s=waited, wait_limit_s=60.0) is expected


def test_too_few_sites_after_the_wait_is_an_error_naming_the_counts():
    with pytest.raises(QuorumError, match="only 1 of 3 sites connected after 61 s; a round needs at least 2"):
        round_can_start(1, wanted=3, quorum=2, waited_s=61.0, wait_limit_s=60.0)
    with pytest.raises(ValueError, match="quorum must be between 1 and 3"):
        round_can_start(3, wanted=3, quorum=4, waited_s=0.0, wait_limit_s=60.0)


def test_update_digest_depends_on_content_keys_and_dtype_only():
    a = {"w": np.array([1.0, 2.0], np.float32), "b": np.zeros(1, np.float32)}
    same = {"b": np.zeros(1, np.float32), "w": np.array([1.0, 2.0], np.float32)}  # other insertion order
    assert update_digest(a) == update_digest(same)
    assert update_digest(a) != update_digest({**a, "w": np.array([1.0, 2.5], np.float32)})
    assert update_digest(a) != update_digest({**a, "w": np.array([1.0, 2.0], np.float64)})
    assert update_digest(a) != update_digest({"v": a["w"], "b": a["b"]})


def test_sorting_by_digest_makes_a_float32_sum_independent_of_arrival_order():
    rng = np.random.default_rng(0)
    updates = [{"w": rng.standard_normal(1000).astype(np.float32) * 10.0**k} for k in range(4)]

    def summed(order):
        ordered = sorted((updates[i] for i in order), key=update_digest)
        total = np.zeros(1000, np.float32)
        for update in ordered:
            total += update["w"]
        return total

    assert np.array_equal(summed([0, 1, 2, 3]), summed([3, 1, 0, 2]))
    unsorted = [np.zeros(1000, np.float32), np.zeros(1000, np.float32)]
    for total, order in zip(unsorted, ([0, 1, 2, 3], [3, 1, 0, 2]), strict=True):
        for i in order:
            total += updates[i]["w"]
    assert not np.array_equal(*unsorted)  # without the fixed order the bits differ: the sort is what fixes them


@pytest.mark.parametrize(
    ("server_round", "saved", "expected"),
    [
        (1, [], []),  # round 1: the site's fixed initial weights
        (1, [1], []),  # a repeated round 1 too
        (3, [1, 2], [2, 1]),  # normal: continue from the last round (the one before if it cannot be read)
        (3, [2, 3], [2]),  # round 3 repeated after a coordinator crash: redo it from round 2
        (5, [2, 1], [2, 1]),  # the site missed rounds 3 and 4: continue from what it has (any order on disk)
        (4, [], []),  # a site joining late starts from its initial weights
    ],
)
def test_which_saved_state_a_round_continues_from(server_round, saved, expected):
    assert site_state_to_resume(server_round, saved) == expected


def test_a_saved_state_from_the_future_is_refused():
    with pytest.raises(ValueError, match=r"round 2 asked for, but this site's saved state is from rounds \[3, 4\]"):
        site_state_to_resume(2, [4, 3])


@pytest.mark.parametrize(
    ("phase", "saved", "expected"),
    [
        ("pretrain", None, 0),
        ("finetune", None, 0),
        ("pretrain", ("pretrain", 2), 2),  # crashed in pre-training round 3: 2 done
        ("finetune", ("pretrain", 2), 0),
        ("pretrain", ("finetune", 1), 5),  # crashed in fine-tuning: pre-training is complete
        ("finetune", ("finetune", 1), 1),
    ],
)
def test_completed_rounds_per_phase(phase, saved, expected):
    rounds = {"pretrain": 5, "finetune": 3}[phase]
    assert completed_rounds(("pretrain", "finetune"), phase, rounds, saved) == expected
