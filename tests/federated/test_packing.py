"""One flat array per dtype on the wire (endofed.federated.packing): hand-computed layouts and round trips."""

from __future__ import annotations

import numpy as np
import pytest

from endofed.federated.bytes import from_transport, payload_layout, to_transport
from endofed.federated.packing import pack, packed_layout, unpack, wire_layout
from endofed.federated.schema import ArraySpec

PAYLOAD = {
    "b": np.array([7, 8, 9], dtype=np.int8),
    "b#scale": np.array([0.5], dtype=np.float32),
    "a": np.array([[1, 2], [3, 4]], dtype=np.int8),
    "a#scale": np.array([0.25], dtype=np.float32),
}
LAYOUT = {k: ArraySpec(str(v.dtype), v.shape) for k, v in PAYLOAD.items()}


def test_pack_joins_entries_in_sorted_key_order_per_dtype():
    packed = pack(PAYLOAD)
    assert list(packed) == ["packed/float32", "packed/int8"]
    assert packed["packed/int8"].tolist() == [1, 2, 3, 4, 7, 8, 9]  # a, then b
    assert packed["packed/float32"].tolist() == [0.25, 0.5]  # a#scale, then b#scale
    assert packed["packed/int8"].dtype == np.int8 and packed["packed/float32"].dtype == np.float32


def test_packed_layout_is_the_total_size_per_dtype():
    assert packed_layout(LAYOUT) == {"packed/float32": ("float32", (2,)), "packed/int8": ("int8", (7,))}
    assert wire_layout({"w": (3, 4), "b": (4,)}, "bf16") == {"packed/uint16": ("uint16", (16,))}
    assert wire_layout({"w": (3, 4), "b": (4,)}, "delta_int8") == {
        "packed/float32": ("float32", (2,)),
        "packed/int8": ("int8", (16,)),
    }
    assert packed_layout({}) == {} and pack({}) == {}


def test_unpack_restores_keys_shapes_and_values_as_views():
    packed = pack(PAYLOAD)
    back = unpack(packed, LAYOUT)
    assert list(back) == list(LAYOUT)  # the layout's key order
    for key, value in PAYLOAD.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)
    assert np.shares_memory(back["a"], packed["packed/int8"])  # no copy


@pytest.mark.parametrize("mode", ["fp32", "bf16", "delta_int8"])
def test_every_codec_round_trips_through_the_packed_form_bitwise(mode):
    rng = np.random.default_rng(0)
    state = {"enc.w": rng.normal(size=(4, 3)).astype(np.float32), "enc.b": rng.normal(size=5).astype(np.float32)}
    reference = {k: v + np.float32(0.01) for k, v in state.items()}
    payload = to_transport(state, mode, reference)
    shapes = {k: v.shape for k, v in state.items()}
    unpacked = unpack(pack(payload), payload_layout(shapes, mode))
    for key in payload:
        np.testing.assert_array_equal(unpacked[key], payload[key])
    expected = from_transport(payload, mode, reference)
    decoded = from_transport(unpacked, mode, reference)
    for key in state:
        assert decoded[key].tobytes() == expected[key].tobytes()
    assert sum(v.nbytes for v in pack(payload).values()) == sum(v.nbytes for v in payload.values())


@pytest.mark.parametrize(
    ("packed", "reason"),
    [
        ({"packed/int8": np.zeros(7, np.int8)}, "missing ['packed/float32']"),
        ({**pack(PAYLOAD), "packed/uint8": np.zeros(1, np.uint8)}, "packed/uint8"),
        ({**pack(PAYLOAD), "packed/int8": np.zeros(6, np.int8)}, "'packed/int8' is int8 (6,), expected int8 (7,)"),
        ({**pack(PAYLOAD), "packed/int8": np.zeros(7, np.uint8)}, "is uint8 (7,), expected int8 (7,)"),
        ({**pack(PAYLOAD), "packed/int8": np.zeros((7, 1), np.int8)}, "is int8 (7, 1), expected int8 (7,)"),
    ],
)
def test_unpack_refuses_arrays_that_do_not_fit_the_layout(packed, reason):
    with pytest.raises(ValueError, match="packed") as raised:
        unpack(packed, LAYOUT)
    assert reason in str(raised.value)
