"""The coordinator's side of the wire: codecs of the arrays, and the screen every site reply passes first.

:func:`screen` holds each reply against the schema of :mod:`endofed.federated.schema` (the records, the arrays'
keys, dtypes and shapes in the up-link codec, the metric keys and their finite scalar values) and the bound on
``num-examples`` before any Flower aggregation code sees it. A reply that does not fit is dropped with its
reason; one site's malformed reply can no longer raise out of ``aggregate_train`` / ``aggregate_evaluate``
and end the run. The kept replies' metric records are cut to the keys all of them hold, which is what Flower's
averaging requires of them (``validate_message_reply_consistency``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from endofed.errors import shorten
from endofed.federated.packing import pack, unpack
from endofed.federated.protocol import METRICS, NUM_EXAMPLES, PARTITION_ID, PASSPORT_SHA256_KEYS
from endofed.federated.schema import ArraySpec, common_keys, describe, reply_problem
from endofed.federated.validate import validate_num_examples

NOT_AVERAGED = frozenset({PARTITION_ID, *PASSPORT_SHA256_KEYS})  # site tags: an average of ids or hashes means nothing


def average_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's weighted metric average, leaving out the site tags (``partition-id``, the passport hash words)."""
    stripped = [
        RecordDict({name: MetricRecord({k: v for k, v in rec.items() if k not in NOT_AVERAGED})
                    for name, rec in record.metric_records.items()})
        for record in records
    ]  # fmt: skip
    return aggregate_metricrecords(stripped, weighting_key)


def as_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord as numpy arrays."""
    return {key: value.numpy() for key, value in arrays.items()}


def to_record(payload: Mapping[str, np.ndarray]) -> ArrayRecord:
    """A codec's payload as it goes on the wire: packed, one ``Array`` per dtype (see endofed.federated.packing)."""
    return ArrayRecord({k: Array(v) for k, v in pack(payload).items()})


def from_record(arrays: ArrayRecord, layout: Mapping[str, ArraySpec]) -> dict[str, np.ndarray]:
    """The payload of ``layout`` in received packed arrays (views into them).

    Raises:
        ValueError: the arrays do not fit the layout.
    """
    return unpack(as_numpy(arrays), layout)


def failed_replies(replies: Iterable[Message]) -> list[dict[str, Any]]:
    """Node, code and reason of each error reply, for the round record.

    An endofed site sends a fixed sentence (``endofed.federated.site_errors``); any other reason is cut short.
    """
    return [
        {"node": int(r.metadata.src_node_id), "code": int(r.error.code), "reason": shorten(str(r.error.reason), 300)}
        for r in replies
        if r.has_error()
    ]


@dataclass
class Screened:
    """The outcome of :func:`screen`.

    Attributes:
        kept: the replies that fit, in the order received (metrics cut to the keys all of them hold).
        errors: error replies (the site failed; Flower logs their fixed reason).
        rejected: ``{"node", "reason"}`` of each reply dropped, for the round record.
        metrics: each kept node's whole metric record, before the cut (the round record keeps it).
    """

    kept: list[Message]
    errors: list[Message]
    rejected: list[dict[str, Any]]
    metrics: dict[int, dict[str, float]]


def screen(
    replies: Iterable[Message], kind: str, allowed_arrays: Mapping[str, ArraySpec], max_examples: int
) -> Screened:
    """Split replies into those that fit the ``kind`` schema and the ``num-examples`` bound, errors, and the rest.

    Args:
        replies: the round's replies, as Flower returns them.
        kind: ``train`` or ``evaluate``.
        allowed_arrays: the layout of a train reply's arrays (the weights sent, in the up-link codec).
        max_examples: the bound on ``num-examples`` (0 = none).
    """
    out = Screened([], [], [], {})
    for reply in replies:
        if reply.has_error():
            out.errors.append(reply)
            continue
        node = int(reply.metadata.src_node_id)
        problem = reply_problem(kind, describe(reply.content), allowed_arrays)
        if problem is None:
            try:
                validate_num_examples(reply.content[METRICS][NUM_EXAMPLES], max_examples)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            out.rejected.append({"node": node, "reason": problem})
            continue
        out.metrics[node] = {k: float(v) for k, v in reply.content[METRICS].items()}  # type: ignore[arg-type]
        out.kept.append(reply)
    shared = common_keys(out.metrics.values())
    for reply in out.kept:
        metrics = reply.content[METRICS]
        if set(metrics) != shared:
            reply.content[METRICS] = MetricRecord({k: v for k, v in metrics.items() if k in shared})
    return out
