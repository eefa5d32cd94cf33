"""per_entry: a function over a state's entries on threads, results and errors in the keys' order."""

from __future__ import annotations

import os
import threading
import time

import pytest

from endofed.federated import arrays
from endofed.federated.arrays import per_entry


def test_results_come_back_in_the_keys_order_whatever_finishes_first():
    keys = [f"k{i}" for i in range(12)]
    delays = {k: 0.002 * (12 - i) for i, k in enumerate(keys)}  # the first key finishes last
    threads: set[int] = set()

    def work(key: str) -> str:
        threads.add(threading.get_ident())
        time.sleep(delays[key])
        return key.upper()

    assert per_entry(work, keys) == [k.upper() for k in keys]
    assert len(threads) == min(arrays.ENTRY_THREADS, len(os.sched_getaffinity(0)), len(keys))


def test_the_first_failing_key_in_order_is_the_error_raised():
    def work(key: int) -> int:
        if key in (3, 7):
            time.sleep(0.01 if key == 3 else 0.0)  # 7 fails first in time, 3 first in order
            raise ValueError(f"entry {key}")
        return key

    with pytest.raises(ValueError, match="entry 3"):
        per_entry(work, range(10))


def test_one_thread_runs_inline(monkeypatch):
    monkeypatch.setattr(arrays, "ENTRY_THREADS", 1)
    assert per_entry(lambda _: threading.get_ident(), range(4)) == [threading.get_ident()] * 4
