"""Fault injection for testing the coordinator's defences: a site that sends broken or hostile updates.

A real attacker runs its own code; to test endofed's server-side checks with real processes, a site can be
started with ``--node-config 'inject-fault="nan@2,norm@3"'``, and its ClientApp then corrupts its *own*
training reply in the named rounds, after its outgoing audit (as a hostile site would, skipping the audit).
Only the operator of that SuperNode can switch this on, and it can only spoil that site's contribution,
which the coordinator must then reject. No flwr import: the ClientApp's mod applies :func:`corrupt`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NODE_CONFIG_KEY = "inject-fault"
FAULTS = {
    "nan": "a NaN in the first array",
    "keys": "an encoder key renamed",
    "shape": "the first array one value short",
    "dtype": "float64 arrays",
    "norm": "weights scaled by 1000 (an absurd update norm)",
    "examples": "num-examples claimed 1000 times too high (a lying FedAvg weight)",
}


def parse_fault_plan(text: str) -> dict[int, str]:
    """``"nan@2, norm@3"`` -> ``{2: "nan", 3: "norm"}`` (server rounds of the pre-training phase).

    Raises:
        ValueError: an item is not ``fault@round`` with a known fault and a round >= 1, or a round repeats.
    """
    plan: dict[int, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fault, _, round_text = item.partition("@")
        if fault not in FAULTS or not round_text.isdigit() or int(round_text) < 1:
            raise ValueError(f"bad fault {item!r}: expected FAULT@ROUND with FAULT one of {sorted(FAULTS)}")
        if int(round_text) in plan:
            raise ValueError(f"round {round_text} has two faults")
        plan[int(round_text)] = fault
    return plan


def corrupt(arrays: Mapping[str, np.ndarray], num_examples: int, fault: str) -> tuple[dict[str, np.ndarray], int]:
    """A site's reply arrays and num-examples spoiled by ``fault`` (the inputs are not modified)."""
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
    else:
        raise ValueError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
    return out, num_examples
