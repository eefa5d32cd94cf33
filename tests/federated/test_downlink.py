"""The int8 down-link's chain, by hand: bf16 first, then int8 deltas with error feedback, fp32 for the rest."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from endofed.federated.bytes import from_transport
from endofed.federated.downlink import DownLink, state_digest


def _w(*values: float) -> dict[str, np.ndarray]:
    return {"w": np.array(values, dtype=np.float32)}


def test_digest_names_keys_shapes_and_bits():
    base = state_digest(_w(1.0, 2.0))
    assert state_digest(_w(1.0, 2.0)) == base and len(base) == 64
    assert state_digest({"v": np.array([1.0, 2.0], np.float32)}) != base  # another key
    assert state_digest({"w": np.array([[1.0, 2.0]], np.float32)}) != base  # another shape
    assert state_digest(_w(1.0, np.nextafter(np.float32(2.0), np.float32(3.0)))) != base  # one ulp
    entry = hashlib.sha256(b"w|(2,)|" + np.array([1.0, 2.0], np.float32).tobytes()).digest()
    assert base == hashlib.sha256(entry).hexdigest()  # by hand


def test_digest_of_many_entries_is_in_key_order_whatever_the_threads():
    state = {f"k{i:03d}": np.full(i + 1, i, np.float32) for i in range(40)}
    entries = [hashlib.sha256(f"{k}|{v.shape}|".encode() + v.tobytes()).digest() for k, v in sorted(state.items())]
    expected = hashlib.sha256(b"".join(entries)).hexdigest()
    assert state_digest(state) == state_digest(dict(reversed(state.items()))) == expected


def test_first_round_is_bf16_and_its_view_is_exactly_those_bf16_values():
    link = DownLink()
    broadcast = link.advance(_w(1.0 + 2**-10, -0.5))  # 1 + 2^-10 rounds to 1.0 in bfloat16
    outgoing = broadcast.for_node(3)
    assert outgoing.mode == "bf16" and outgoing.base_digest is None
    assert outgoing.payload["w"].dtype == np.uint16
    np.testing.assert_array_equal(link.view["w"], [1.0, -0.5])
    np.testing.assert_array_equal(from_transport(outgoing.payload, "bf16")["w"], link.view["w"])
    assert outgoing.view_digest == link.digest == state_digest(link.view)


def test_later_rounds_send_int8_deltas_to_holders_and_the_same_view_in_fp32_to_others():
    link = DownLink()
    link.advance(_w(1.0, -0.5, 0.0))
    link.confirm(3)
    first_view = {k: v.copy() for k, v in link.view.items()}
    broadcast = link.advance(_w(1.127, -0.5, 0.0635))  # delta (0.127, 0, 0.0635): scale 0.001, q = 127, 0, 64
    delta, full = broadcast.for_node(3), broadcast.for_node(4)
    assert delta.mode == "delta_int8" and delta.base_digest == state_digest(first_view)
    assert delta.payload["w"].tolist() == [127, 0, 64] and delta.payload["w#scale"][0] == pytest.approx(0.001, rel=1e-5)
    assert full.mode == "fp32" and full.base_digest is None
    decoded = from_transport(delta.payload, "delta_int8", first_view)
    np.testing.assert_array_equal(decoded["w"], full.payload["w"])  # the same view either way
    assert state_digest(decoded) == delta.view_digest == full.view_digest
    np.testing.assert_allclose(link.view["w"], [1.127, -0.5, 0.064], atol=1e-6)  # 64 steps: 0.0005 off
    assert broadcast.for_node(4) is full  # one full payload, shared by every node that needs it
    assert link.holders == set()  # nobody has confirmed the new view yet


def test_the_quantisation_error_is_carried_into_the_next_delta_so_the_view_does_not_drift():
    link, master = DownLink(), _w(0.0, 0.0)
    link.advance(master)
    rng = np.random.default_rng(0)
    for _ in range(30):
        master = {"w": (master["w"] + rng.normal(0, 0.01, 2)).astype(np.float32)}
        link.confirm(1)
        broadcast = link.advance(master)
        # the view is within half a step of this round's delta (no accumulation over rounds)
        step = broadcast.delta.payload["w#scale"][0]
        assert np.abs(link.view["w"] - master["w"]).max() <= step / 2 + 1e-7


def test_a_site_that_missed_rounds_gets_full_weights_then_deltas_again():
    link = DownLink()
    link.advance(_w(1.0))
    link.confirm(1), link.confirm(2)
    link.advance(_w(1.1))
    link.confirm(1)  # node 2 missed round 2
    broadcast = link.advance(_w(1.2))
    assert broadcast.for_node(1).mode == "delta_int8" and broadcast.for_node(2).mode == "fp32"


def test_evaluation_peeks_at_the_next_delta_without_moving_the_chain():
    link = DownLink()
    link.advance(_w(1.0, 2.0))
    link.confirm(5)
    before = (link.digest, {k: v.copy() for k, v in link.view.items()}, set(link.holders))
    peeked = link.peek(_w(1.05, 2.0))
    assert peeked.for_node(5).mode == "delta_int8" and peeked.for_node(6).mode == "fp32"
    assert (link.digest, link.holders) == (before[0], before[2])
    np.testing.assert_array_equal(link.view["w"], before[1]["w"])
    trained = link.advance(_w(1.05, 2.0))  # the next round sends the identical delta
    assert trained.delta.view_digest == peeked.delta.view_digest


def test_export_and_restore_continue_the_same_chain():
    link = DownLink()
    link.advance(_w(1.0, 2.0))
    link.confirm(9)
    arrays, meta = link.export()
    assert set(arrays) == {"view.w"} and meta == {"digest": link.digest, "holders": [9]}
    resumed = DownLink()
    resumed.restore(arrays, meta)
    a, b = link.advance(_w(1.5, 2.0)), resumed.advance(_w(1.5, 2.0))
    assert a.for_node(9).view_digest == b.for_node(9).view_digest and b.for_node(9).mode == "delta_int8"
    with pytest.raises(ValueError, match="does not match its digest"):
        DownLink().restore({"view.w": np.array([3.0], np.float32)}, meta)
