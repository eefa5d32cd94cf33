"""A message's encoder on the wire as one flat array per dtype: a handful of Flower objects instead of hundreds.

Flower moves every array of a message (and every 5 MiB chunk of one) as a content-addressed object of its own,
with one HTTP request per object and hop, so a ViT-B payload of 151 tensors, plus one int8 scale each, cost about
300 requests per message before a byte of weights moved. A payload (a codec's dict of arrays,
:mod:`endofed.federated.bytes`) therefore travels *packed*: its entries in sorted key order, flattened and joined
into one 1-D array per dtype, under the key ``packed/<dtype>``. Both ends know the payload's layout (the encoder's
keys and shapes, and the codec: :func:`endofed.federated.bytes.payload_layout`), so no key or shape travels, and
the bytes are the same as unpacked. Unpacking gives views into the packed arrays (no copy) and refuses packed
arrays whose keys, dtypes or sizes do not fit the layout.

Example: ``{"b": int8 (3,), "b#scale": float32 (1,), "a": int8 (2, 2), "a#scale": float32 (1,)}`` packs to
``{"packed/float32": [a#scale, b#scale], "packed/int8": [*a.ravel(), *b]}`` (2 float32 and 7 int8 values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from endofed.federated.arrays import key_mismatch
from endofed.federated.bytes import payload_layout
from endofed.federated.schema import ArraySpec

PACKED_PREFIX = "packed/"


def packed_layout(layout: Mapping[str, ArraySpec]) -> dict[str, ArraySpec]:
    """The keys, dtypes and shapes of the packed form of a payload with this layout (keys sorted by dtype).

    Example: ``{"w": ("int8", (3, 4)), "w#scale": ("float32", (1,))}`` packs to
    ``{"packed/float32": ("float32", (1,)), "packed/int8": ("int8", (12,))}``.
    """
    sizes: dict[str, int] = {}
    for spec in layout.values():
        sizes[spec.dtype] = sizes.get(spec.dtype, 0) + math.prod(spec.shape)
    return {PACKED_PREFIX + dtype: ArraySpec(dtype, (size,)) for dtype, size in sorted(sizes.items())}


def wire_layout(shapes: Mapping[str, tuple[int, ...]], mode: str) -> dict[str, ArraySpec]:
    """The arrays of a message carrying float32 weights of these shapes in codec ``mode``: the packed payload layout.

    Example: ``wire_layout({"w": (3, 4), "b": (4,)}, "bf16") == {"packed/uint16": ("uint16", (16,))}``.
    """
    return packed_layout(payload_layout(shapes, mode))


def pack(payload: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One 1-D array per dtype: the payload's entries in sorted key order, flattened and joined (a copy)."""
    groups: dict[str, list[np.ndarray]] = {}
    for key in sorted(payload):
        value = np.asarray(payload[key])
        groups.setdefault(str(value.dtype), []).append(value.reshape(-1))
    return {PACKED_PREFIX + dtype: np.concatenate(parts) for dtype, parts in sorted(groups.items())}


def unpack(packed: Mapping[str, np.ndarray], layout: Mapping[str, ArraySpec]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack` for a payload of ``layout``: ``{key: view}`` in the layout's key order.

    Raises:
        ValueError: one line naming the first way ``packed`` does not fit the layout (keys, dtype, size).
    """
    expected = packed_layout(layout)
    mismatch = key_mismatch(expected, packed)
    if mismatch:
        raise ValueError(f"packed arrays do not fit the encoder's layout: {mismatch}")
    for key, spec in expected.items():
        value = np.asarray(packed[key])
        if str(value.dtype) != spec.dtype or value.shape != spec.shape:
            raise ValueError(f"packed {key!r} is {value.dtype} {value.shape}, expected {spec.dtype} {spec.shape}")
    offsets = dict.fromkeys(expected, 0)
    views: dict[str, np.ndarray] = {}
    for key in sorted(layout):
        dtype, shape = layout[key]
        name, size = PACKED_PREFIX + dtype, math.prod(shape)
        views[key] = np.asarray(packed[name])[offsets[name] : offsets[name] + size].reshape(shape)
        offsets[name] += size
    return {key: views[key] for key in layout}
