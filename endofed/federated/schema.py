"""What a site's reply may hold: an allow-list derived from the protocol, checked at both ends (no flwr import).

Every reply is described as plain data (:class:`ReplyContent`: record names, each array's dtype and shape,
each metric's value) and held against the schema of its message kind:

* **records**: a train reply holds exactly one ArrayRecord ``arrays`` and one MetricRecord ``metrics``; an
  evaluate reply exactly one MetricRecord ``metrics``. No ConfigRecord, no other record.
* **arrays**: exactly the encoder the site received, in the reply's codec
  (:func:`endofed.federated.bytes.payload_layout`: float32; bfloat16 bits as uint16; int8 plus one float32 scale
  per entry), packed into one array per dtype of the exact size (:func:`endofed.federated.packing.wire_layout`).
* **metrics**: keys from a closed set per kind (:data:`TRAIN_METRICS`, :data:`EVALUATE_METRICS`), ``num-examples``
  required, each value one finite int or float (no list, no bool).

The site refuses to send anything else (``client/app.py``, before the reply leaves; the reason goes to the
site's own log), and the coordinator drops anything else before Flower's aggregation code sees it
(``server/replies.py``), with the reason in the round record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from endofed.errors import shorten
from endofed.federated.protocol import (
    ARRAYS,
    EVALUATION_METRICS,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    PASSPORT_SHA256_KEYS,
    TIMINGS,
    TRAIN_LOSS,
    TRAIN_SECONDS,
)

TRAIN, EVALUATE = "train", "evaluate"  # message kinds (Flower's MessageType values)
TRAIN_METRICS = frozenset({NUM_EXAMPLES, TRAIN_LOSS, TRAIN_SECONDS, PARTITION_ID, *TIMINGS, *PASSPORT_SHA256_KEYS})
EVALUATE_METRICS = frozenset({NUM_EXAMPLES, PARTITION_ID, *EVALUATION_METRICS})
REQUIRED_METRICS = frozenset({NUM_EXAMPLES})
NUMPY_STYPE = "numpy.ndarray"  # Flower's serialisation type of a numpy array; any other is refused
_MAX_REASON = 300  # characters of a refusal reason (it may quote a hostile key)


class ArraySpec(NamedTuple):
    """One array as it travels: numpy dtype string (e.g. ``float32``, ``uint16``, ``int8``) and shape."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ReplyContent:
    """A reply's records as plain data: ``{record name: {key: ArraySpec}}``, ``{record name: {key: value}}``."""

    arrays: Mapping[str, Mapping[str, ArraySpec]] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    configs: tuple[str, ...] = ()


def describe(content: Any) -> ReplyContent:
    """A Flower ``RecordDict`` as :class:`ReplyContent`.

    Duck-typed (reads ``array_records``, ``metric_records``, ``config_records``), so the library needs no flwr; an
    array serialised as anything but numpy gets its serialisation type as its dtype, which no schema allows.
    """
    arrays = {
        name: {key: ArraySpec(str(a.dtype) if a.stype == NUMPY_STYPE else f"stype {a.stype}", tuple(a.shape))
               for key, a in record.items()}
        for name, record in content.array_records.items()
    }  # fmt: skip
    metrics = {name: dict(record.items()) for name, record in content.metric_records.items()}
    return ReplyContent(arrays, metrics, tuple(content.config_records))


def _listed(keys: Iterable[str], limit: int = 3) -> str:
    """A few keys, each shortened (a hostile key can be any string), and a count of the rest."""
    items = sorted(str(k) for k in keys)
    shown = ", ".join(repr(shorten(k, 60)) for k in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _record_problem(kind: str, content: ReplyContent) -> str | None:
    """What is wrong with the reply's set of records, if anything."""
    if content.configs:
        return f"a config record ({_listed(content.configs)}): only arrays and metrics may be sent"
    wanted_arrays = {ARRAYS} if kind == TRAIN else set()
    if set(content.arrays) != wanted_arrays:
        return f"array records {_listed(content.arrays) or 'none'}, expected {_listed(wanted_arrays) or 'none'}"
    if set(content.metrics) != {METRICS}:
        return f"metric records {_listed(content.metrics) or 'none'}, expected {METRICS!r}"
    return None


def array_problem(arrays: Mapping[str, ArraySpec], allowed: Mapping[str, ArraySpec]) -> str | None:
    """What is wrong with the arrays compared with the allowed layout (exact keys, dtypes, shapes), if anything."""
    extra, missing = set(arrays) - set(allowed), set(allowed) - set(arrays)
    if extra or missing:
        extra_text, missing_text = _listed(extra) or "none", _listed(missing) or "none"
        return f"arrays beyond the shared encoder: extra {extra_text}, missing {missing_text}"
    for key, spec in arrays.items():
        want = allowed[key]
        if spec.dtype != want.dtype:
            return f"array {shorten(key, 80)!r} has dtype {shorten(spec.dtype, 40)}, expected {want.dtype}"
        if tuple(spec.shape) != tuple(want.shape):
            return f"array {shorten(key, 80)!r} has shape {tuple(spec.shape)}, expected {tuple(want.shape)}"
    return None


def metric_problem(kind: str, metrics: Mapping[str, Any]) -> str | None:
    """What is wrong with the metrics of a ``kind`` reply (closed key set, finite scalars), if anything."""
    allowed = TRAIN_METRICS if kind == TRAIN else EVALUATE_METRICS
    unknown = set(metrics) - allowed
    if unknown:
        return f"metric keys outside the {kind} schema: {_listed(unknown)}"
    missing = REQUIRED_METRICS - set(metrics)
    if missing:
        return f"required metric {_listed(missing)} missing"
    for key, value in sorted(metrics.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric {key!r} is a {type(value).__name__}, not one number"
        if not math.isfinite(value):
            return f"metric {key!r} is {value!r}, not a finite number"
    return None


def reply_problem(kind: str, content: ReplyContent, allowed_arrays: Mapping[str, ArraySpec]) -> str | None:
    """The first way a reply departs from the schema of ``kind`` (``train`` or ``evaluate``); ``None`` if it fits.

    Args:
        kind: the message kind.
        content: the reply, see :func:`describe`.
        allowed_arrays: the layout a train reply's ``arrays`` must have (ignored for ``evaluate``).

    Raises:
        ValueError: on an unknown kind.
    """
    if kind not in (TRAIN, EVALUATE):
        raise ValueError(f"message kind must be {TRAIN!r} or {EVALUATE!r}, got {kind!r}")
    problem = _record_problem(kind, content)
    if problem is None and kind == TRAIN:
        problem = array_problem(content.arrays[ARRAYS], allowed_arrays)
    if problem is None:
        problem = metric_problem(kind, content.metrics[METRICS])
    return None if problem is None else shorten(problem, _MAX_REASON)


def finite_metrics(metrics: Mapping[str, float | int]) -> tuple[dict[str, float | int], list[str]]:
    """The metrics whose value is finite, and the keys left out (e.g. an AUC undefined on a one-class test set)."""
    kept = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return kept, sorted(set(metrics) - set(kept))


def common_keys(metric_sets: Iterable[Iterable[str]]) -> set[str]:
    """The metric keys every reply holds (Flower averages a metric only when every reply has it)."""
    sets = [set(keys) for keys in metric_sets]
    return set.intersection(*sets) if sets else set()
