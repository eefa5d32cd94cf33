"""What may leave a site: the check of every outgoing reply, and a local log of what left (no flwr import).

A reply must fit the schema of its message kind (:mod:`endofed.federated.schema`): the shared encoder's exact
keys, dtypes and shapes in the reply's codec, metric keys from a closed set with finite scalar values, no
other record. The ClientApp runs :func:`audit_outgoing` on every reply before it is sent (a refused reply
never leaves: the site's log gets the reason, the coordinator an error code) and appends one JSON line per
message to ``<work_dir>/federation/<run>/outgoing.jsonl``, so a hospital can see exactly what it shared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from endofed.federated.protocol import ARRAYS, METRICS, OUTGOING_FILE
from endofed.federated.schema import ArraySpec, ReplyContent, reply_problem
from endofed.federated.site_errors import WithheldReply


def audit_outgoing(kind: str, content: ReplyContent, allowed_arrays: Mapping[str, ArraySpec]) -> dict[str, Any]:
    """Check one outgoing reply against the schema; returns its audit record.

    Args:
        kind: ``train`` or ``evaluate``.
        content: the reply (:func:`endofed.federated.schema.describe`).
        allowed_arrays: the layout of the encoder the site received, in the reply's codec.

    Raises:
        WithheldReply: one line naming the first thing beyond the schema.
    """
    problem = reply_problem(kind, content, allowed_arrays)
    if problem is not None:
        raise WithheldReply(f"refusing to send the {kind} reply: {problem}")
    arrays = content.arrays.get(ARRAYS, {})
    return {
        "message": kind,
        "arrays": len(arrays),
        "array_values": sum(math.prod(spec.shape) for spec in arrays.values()),
        "metrics": sorted(content.metrics[METRICS]),
    }


def append_audit(folder: Path, record: Mapping[str, Any]) -> Path:
    """Append one audit record to the site's outgoing log."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / OUTGOING_FILE
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return path
