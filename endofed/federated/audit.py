"""What may leave a site: a check of every outgoing message, and a local log of what left (no flwr import).

A reply may hold only the shared encoder arrays (exact keys and shapes of the key policy) and numeric
metrics: no other arrays (images, decoder, head), no strings (paths, subject ids), no config records.
The ClientApp runs this on every reply before it is sent and appends one JSON line per message to
``<work_dir>/federation/<run>/outgoing.jsonl``, so a hospital can see exactly what it shared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from endofed.federated.protocol import OUTGOING_FILE


def audit_outgoing(
    arrays: Mapping[str, tuple[int, ...]],
    metrics: Mapping[str, Any],
    other_records: int,
    allowed_arrays: Mapping[str, tuple[int, ...]],
) -> dict[str, Any]:
    """Check one outgoing reply; returns its audit record.

    Args:
        arrays: shape of every array in the reply (empty for an evaluation reply).
        metrics: the reply's metrics.
        other_records: number of records other than one ArrayRecord and one MetricRecord (must be 0).
        allowed_arrays: the shared encoder's keys and shapes.

    Raises:
        ValueError: anything beyond the shared encoder and numeric metrics would leave the site.
    """
    if other_records:
        raise ValueError(f"refusing to send {other_records} extra record(s): only encoder arrays and metrics may leave")
    if arrays:
        extra = sorted(set(arrays) - set(allowed_arrays))
        missing = sorted(set(allowed_arrays) - set(arrays))
        if extra or missing:
            raise ValueError(
                f"refusing to send arrays beyond the shared encoder: extra {extra[:3]}, missing {missing[:3]}"
            )
        wrong = [k for k, shape in arrays.items() if tuple(shape) != tuple(allowed_arrays[k])]
        if wrong:
            raise ValueError(f"refusing to send arrays with unexpected shapes: {wrong[:3]}")
    for key, value in metrics.items():
        numbers = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise ValueError(f"refusing to send metric {key!r}: only numbers may leave the site, got {value!r}")
    return {
        "arrays": len(arrays),
        "array_values": sum(math.prod(shape) for shape in arrays.values()),
        "metrics": sorted(metrics),
    }


def append_audit(folder: Path, record: Mapping[str, Any]) -> Path:
    """Append one audit record to the site's outgoing log."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / OUTGOING_FILE
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return path
