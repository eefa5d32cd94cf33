"""Fault injection for testing the coordinator's defences: a site that sends broken or hostile updates.

A real attacker runs its own code; to test endofed's server-side checks with real processes, a site can be
started with ``--node-config 'inject-fault="nan@2,norm@3,eval-nan@1"'``, and its ClientApp then corrupts its
*own* reply in the named rounds (train faults: pre-training rounds; ``eval-*``: evaluate rounds), after its
outgoing audit (as a hostile site would, skipping the audit). The ``raise`` fault instead raises, inside the
ClientApp's error containment, an exception whose text names a subject and a path (what must never leave).
Only the operator of that SuperNode can switch this on, and it can only spoil that site's contribution,
which the coordinator must then reject. No flwr import: the instrumented ClientApp applies :func:`spoil`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from endofed.errors import DataError

NODE_CONFIG_KEY = "inject-fault"
FAULTS = {  # spoil a pre-training train reply of the named round
    "nan": "a NaN in the first array",
    "keys": "an encoder key renamed",
    "shape": "the first array one value short",
    "dtype": "float64 arrays",
    "norm": "weights scaled by 1000 (an absurd update norm)",
    "examples": "num-examples claimed 1000 times too high (a lying FedAvg weight)",
    "metric-key": "an extra metric whose key is a path and a subject id",
    "metric-list": "train-loss sent as a list of 8192 floats (a whole cached case)",
    "no-arrays": "a train reply without its arrays record",
    "text-array": "the first array replaced by text (a path)",
    "uint8": "the arrays sent as uint8 bytes",
    "config": "an extra config record holding a path",
    "raise": "honest code raising an exception whose message holds a path and a subject id",
}
EVAL_FAULTS = {  # spoil an evaluate reply of the named server round (any phase)
    "eval-no-metrics": "an evaluate reply without its metrics record",
    "eval-nan": "a NaN AUC claimed over 10^9 test patients",
    "eval-list": "the AUC sent as a list of 100 floats",
}
TRAIN, EVALUATE = "train", "evaluate"
LEAKED_SUBJECT = "sub-SECRET-4711"  # what the "raise" fault's message holds; must never reach the coordinator
LEAKED_PATH = "/hospital/secret-share/endometriosis/manifest.csv"
SENT_ON_PURPOSE = "/hostile-site/images/sub-0001"  # what the hostile faults put in keys, text arrays, configs


@dataclass
class Reply:
    """A reply's records as plain data: ``None`` = the record is absent; ``config`` = an extra ConfigRecord."""

    arrays: dict[str, np.ndarray] | None
    metrics: dict[str, Any] | None
    config: dict[str, str] | None = None


def parse_fault_plan(text: str) -> dict[tuple[str, int], str]:
    """``"nan@2, eval-nan@1"`` -> ``{("train", 2): "nan", ("evaluate", 1): "eval-nan"}``.

    Raises:
        ValueError: an item is not ``fault@round`` with a known fault and a round >= 1, or a slot repeats.
    """
    plan: dict[tuple[str, int], str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fault, _, round_text = item.partition("@")
        known = FAULTS | EVAL_FAULTS
        if fault not in known or not round_text.isdigit() or int(round_text) < 1:
            raise ValueError(f"bad fault {item!r}: expected FAULT@ROUND with FAULT one of {sorted(known)}")
        slot = (EVALUATE if fault in EVAL_FAULTS else TRAIN, int(round_text))
        if slot in plan:
            raise ValueError(f"{slot[0]} round {round_text} has two faults")
        plan[slot] = fault
    return plan


def leaking_exception() -> DataError:
    """The exception of the ``raise`` fault: honest code naming a subject and a path, as a data check does."""
    return DataError(f"duplicate subject_id {LEAKED_SUBJECT!r} in {LEAKED_PATH}")


def corrupt(arrays: Mapping[str, np.ndarray], num_examples: int, fault: str) -> tuple[dict[str, np.ndarray], int]:
    """A site's reply arrays and num-examples spoiled by an array or claim ``fault`` (the inputs are not modified)."""
    out = {key: np.array(value) for key, value in arrays.items()}
    first = next(iter(out))
    if fault == "nan":
        out[first].reshape(-1)[0] = np.nan
    elif fault == "keys":
        out[f"{first}.renamed"] = out.pop(first)
    elif fault == "shape":
        out[first] = out[first].reshape(-1)[:-1]
    elif fault == "dtype":
        out = {key: value.astype(np.float64) for key, value in out.items()}
    elif fault == "norm":
        out = {key: value * np.asarray(1000, dtype=value.dtype) for key, value in out.items()}
    elif fault == "examples":
        num_examples *= 1000
    elif fault == "text-array":
        out[first] = np.full(out[first].shape, SENT_ON_PURPOSE.ljust(40, "/"))
    elif fault == "uint8":
        out = {key: value.view(np.uint8) for key, value in out.items()}
    else:
        raise ValueError(f"unknown array fault {fault!r}")
    return out, num_examples


def spoil(reply: Reply, fault: str) -> Reply:
    """A reply spoiled by ``fault`` (a new one; the input is not modified). ``raise`` is the caller's to raise."""
    metrics = None if reply.metrics is None else dict(reply.metrics)
    arrays = None if reply.arrays is None else dict(reply.arrays)
    if fault == "metric-key":
        return Reply(arrays, {**(metrics or {}), SENT_ON_PURPOSE: 1.0})
    if fault == "metric-list":
        return Reply(arrays, {**(metrics or {}), "train-loss": [0.125] * 8192})
    if fault == "no-arrays":
        return Reply(None, metrics)
    if fault == "config":
        return Reply(arrays, metrics, {"source": SENT_ON_PURPOSE})
    if fault == "eval-no-metrics":
        return Reply(arrays, None)
    if fault == "eval-nan":
        return Reply(arrays, {**(metrics or {}), "auc": float("nan"), "num-examples": 10**9})
    if fault == "eval-list":
        return Reply(arrays, {**(metrics or {}), "auc": [0.5] * 100})
    if arrays is None or metrics is None:
        raise ValueError(f"fault {fault!r} needs a train reply with arrays and metrics")
    spoiled, claimed = corrupt(arrays, int(metrics["num-examples"]), fault)
    return Reply(spoiled, {**metrics, "num-examples": claimed})
