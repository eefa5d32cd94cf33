from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from endofed.federated.bytes import (
    SCALE_SUFFIX,
    TRANSPORT_MODES,
    bf16_bits,
    bf16_values,
    from_transport,
    link_modes,
    payload_layout,
    state_nbytes,
    to_transport,
    zero_delta,
)
from endofed.federated.weights import encoder_state


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_byte_counts_by_hand():
    state = {"w": np.ones((10, 10), dtype=np.float32)}
    assert state_nbytes(state) == 400
    assert state_nbytes({"w": torch.ones(10, 10)}) == 400
    assert state_nbytes({"w": torch.ones(10, 10, dtype=torch.bfloat16)}) == 200
    assert state_nbytes({"w": np.ones((10, 10))}) == 800  # float64
    assert state_nbytes(to_transport(state, "fp32")) == 400
    assert state_nbytes(to_transport(state, "bf16")) == 200
    reference = {"w": np.zeros((10, 10), dtype=np.float32)}
    assert state_nbytes(to_transport(state, "delta_int8", reference)) == 100 + 4  # int8 values + one scale
    assert state_nbytes({}) == 0


def test_tiny_encoder_bytes(tiny_mae):
    state = encoder_state(tiny_mae)
    numel = sum(p.numel() for p in tiny_mae.encoder.parameters())
    assert state_nbytes(state) == 4 * numel
    assert state_nbytes(to_transport(state, "bf16")) == 2 * numel
    assert state_nbytes(to_transport(state, "delta_int8", state)) == numel + 4 * len(state)


def test_fp32_is_an_exact_copy():
    state = {"w": _f32(1.5, -2.25), "b": torch.tensor([3.0])}
    payload = to_transport(state, "fp32")
    assert payload["w"].dtype == np.float32 and payload["w"] is not state["w"]
    payload["w"][0] = 99.0
    assert state["w"][0] == 1.5
    decoded = from_transport(payload, "fp32")
    np.testing.assert_array_equal(decoded["b"], _f32(3.0))


def test_bf16_bits_by_hand():
    bits = bf16_bits(_f32(1.0, -2.0, 0.0, 0.5))
    assert bits.dtype == np.uint16
    assert bits.tolist() == [0x3F80, 0xC000, 0x0000, 0x3F00]
    np.testing.assert_array_equal(bf16_values(bits), _f32(1.0, -2.0, 0.0, 0.5))


def test_bf16_rounds_to_nearest_even():
    # bfloat16 keeps 7 mantissa bits: near 1 the spacing is 2^-7.
    values = _f32(1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-7 + 2**-10)
    decoded = from_transport(to_transport({"w": values}, "bf16"), "bf16")["w"]
    # halfway -> even (1.0); halfway -> even (1 + 2^-6); below halfway -> down (1 + 2^-7)
    np.testing.assert_array_equal(decoded, _f32(1.0, 1 + 2**-6, 1 + 2**-7))


def test_bf16_round_trip_error_bound_and_exact_decode():
    values = np.random.default_rng(0).normal(0, 3, size=(64, 16)).astype(np.float32)
    payload = to_transport({"w": values, "t": torch.from_numpy(values)}, "bf16")
    decoded = from_transport(payload, "bf16")
    assert decoded["w"].dtype == np.float32 and decoded["w"].shape == (64, 16)
    assert np.all(np.abs(decoded["w"] - values) <= np.abs(values) * 2**-8)  # half a unit in the 8th significant bit
    np.testing.assert_array_equal(decoded["w"], decoded["t"])
    # decoding is exact: torch's own bf16 -> fp32 conversion gives the same floats
    np.testing.assert_array_equal(decoded["w"], torch.from_numpy(values).to(torch.bfloat16).float().numpy())
    # and re-encoding the decoded values gives the same bits
    np.testing.assert_array_equal(to_transport(decoded, "bf16")["w"], payload["w"])


def test_bf16_keeps_nan_and_inf():
    decoded = from_transport(to_transport({"w": _f32(math.inf, -math.inf, math.nan)}, "bf16"), "bf16")["w"]
    assert decoded[0] == math.inf and decoded[1] == -math.inf and math.isnan(decoded[2])


def test_delta_int8_by_hand():
    reference = {"w": _f32(0, 0, 0, 1)}
    state = {"w": _f32(1.27, -0.5, 0.004, 1)}
    payload = to_transport(state, "delta_int8", reference)
    # peak |delta| = 1.27 -> scale = 1.27 / 127 = 0.01; q = (127, -50, round(0.4) = 0, 0)
    assert set(payload) == {"w", "w" + SCALE_SUFFIX}
    assert payload["w"].dtype == np.int8 and payload["w"].tolist() == [127, -50, 0, 0]
    assert payload["w" + SCALE_SUFFIX].dtype == np.float32
    assert payload["w" + SCALE_SUFFIX][0] == pytest.approx(0.01)
    decoded = from_transport(payload, "delta_int8", reference)["w"]
    np.testing.assert_allclose(decoded, _f32(1.27, -0.5, 0.0, 1.0), atol=1e-6)


def test_delta_int8_error_is_at_most_half_a_step():
    rng = np.random.default_rng(1)
    reference = {"a": rng.normal(size=(32, 8)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    state = {k: v + rng.normal(0, 0.01, size=v.shape).astype(np.float32) for k, v in reference.items()}
    payload = to_transport(state, "delta_int8", reference)
    decoded = from_transport(payload, "delta_int8", reference)
    for key, value in state.items():
        scale = float(payload[key + SCALE_SUFFIX][0])
        assert scale == pytest.approx(np.abs(value.astype(np.float64) - reference[key]).max() / 127, rel=1e-6)
        error = np.abs(decoded[key].astype(np.float64) - value.astype(np.float64))
        assert np.all(error <= scale / 2 + 1e-6 * np.abs(value)), (key, error.max(), scale)


def test_delta_int8_of_an_unchanged_state_is_exact():
    reference = {"w": _f32(0.3, -7.0)}
    payload = to_transport(reference, "delta_int8", reference)
    assert payload["w" + SCALE_SUFFIX][0] == 0.0 and payload["w"].tolist() == [0, 0]
    np.testing.assert_array_equal(from_transport(payload, "delta_int8", reference)["w"], reference["w"])


@pytest.mark.parametrize("mode", TRANSPORT_MODES)
def test_every_mode_round_trips_a_real_encoder(tiny_mae, mode):
    reference = encoder_state(tiny_mae)
    state = {
        k: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2)) for k, v in reference.items()
    }
    decoded = from_transport(to_transport(state, mode, reference), mode, reference)
    assert list(decoded) == list(state)
    for key, value in state.items():
        assert decoded[key].dtype == np.float32
        np.testing.assert_allclose(decoded[key], value.numpy(), atol=0.02, rtol=2**-8)


def test_bad_modes_and_payloads_are_refused():
    state = {"w": _f32(1, 2)}
    with pytest.raises(ValueError, match="transport mode must be one of"):
        to_transport(state, "fp16")
    with pytest.raises(ValueError, match="transport mode must be one of"):
        from_transport(state, "int4")
    with pytest.raises(ValueError, match="needs the reference state"):
        to_transport(state, "delta_int8")
    with pytest.raises(ValueError, match="needs the reference state"):
        from_transport(state, "delta_int8")
    with pytest.raises(ValueError, match="bf16 payload 'w' has dtype float32, expected uint16"):
        from_transport(state, "bf16")
    with pytest.raises(ValueError, match="fp32 payload 'w' has dtype float64"):
        from_transport({"w": np.ones(2)}, "fp32")


def test_bad_delta_payloads_are_refused():
    reference = {"w": _f32(0, 0)}
    with pytest.raises(ValueError, match=r"missing \['w#scale'\]"):
        from_transport({"w": np.zeros(2, dtype=np.int8)}, "delta_int8", reference)
    bad_dtype = {"w": np.zeros(2, dtype=np.int16), "w#scale": _f32(0.1)}
    with pytest.raises(ValueError, match="'w' must be int8 of shape"):
        from_transport(bad_dtype, "delta_int8", reference)
    bad_scale = {"w": np.zeros(2, dtype=np.int8), "w#scale": _f32(math.nan)}
    with pytest.raises(ValueError, match="'w#scale' must be one finite scale"):
        from_transport(bad_scale, "delta_int8", reference)
    with pytest.raises(ValueError, match="'w' has NaN or Inf values"):
        to_transport({"w": _f32(math.nan, 0)}, "delta_int8", reference)
    with pytest.raises(ValueError, match=r"state keys differ from the delta reference: missing \['w'\]"):
        to_transport({"v": _f32(0, 0)}, "delta_int8", reference)


def test_link_modes_by_hand():
    assert link_modes("fp32") == ("fp32", "fp32")
    assert link_modes("bf16") == ("bf16", "bf16")
    assert link_modes("delta_int8") == ("delta_int8", "delta_int8")  # down: against the weights a site holds
    with pytest.raises(ValueError, match="transport mode must be one of"):
        link_modes("int8_delta")


def test_payload_layout_by_hand():
    shapes = {"w": (3, 4), "b": (4,)}
    assert payload_layout(shapes, "fp32") == {"w": ("float32", (3, 4)), "b": ("float32", (4,))}
    assert payload_layout(shapes, "bf16") == {"w": ("uint16", (3, 4)), "b": ("uint16", (4,))}
    assert payload_layout(shapes, "delta_int8") == {
        "w": ("int8", (3, 4)), "b": ("int8", (4,)), "w#scale": ("float32", (1,)), "b#scale": ("float32", (1,))
    }  # fmt: skip
    reference = {"w": np.zeros((3, 4), dtype=np.float32), "b": np.zeros(4, dtype=np.float32)}
    for mode in ("fp32", "bf16", "delta_int8"):  # the real payloads have exactly this layout
        payload = to_transport({k: v + 1 for k, v in reference.items()}, mode, reference)
        assert {k: (str(v.dtype), v.shape) for k, v in payload.items()} == payload_layout(shapes, mode)


def test_zero_delta_decodes_to_the_reference_exactly():
    reference = {"w": _f32(0.3, -7.0, 1e-30), "b": np.full((2, 2), 5.5, dtype=np.float32)}
    payload = zero_delta({k: v.shape for k, v in reference.items()})
    assert payload["w"].tolist() == [0, 0, 0] and payload["w#scale"].tolist() == [0.0]
    assert state_nbytes(payload) == 3 + 4 + 4 + 4
    decoded = from_transport(payload, "delta_int8", reference)
    assert all(np.array_equal(decoded[k], reference[k]) for k in reference)


def test_bf16_down_and_int8_delta_up_by_hand():
    # The server's float32 master weight m; the site receives s = bf16(m) and trains to w = s + d.
    master = {"w": _f32(1.0 + 2**-10, 2.0, -0.5, 0.0)}  # 1 + 2^-10 is not a bfloat16: s = 1.0
    sent = from_transport(to_transport(master, "bf16"), "bf16")
    np.testing.assert_array_equal(sent["w"], _f32(1.0, 2.0, -0.5, 0.0))
    trained = {"w": sent["w"] + _f32(0.0254, -0.01, 0.001, 0.0)}
    payload = to_transport(trained, "delta_int8", sent)
    # peak |d| = 0.0254 -> scale = 0.0002; q = (127, -50, 5, 0)
    assert payload["w"].tolist() == [127, -50, 5, 0]
    assert payload["w#scale"][0] == pytest.approx(0.0002, rel=1e-5)  # float32 inputs: 1.0254 is not exact
    # The server adds the decoded delta to m (not to s): m + q * scale, within scale / 2 of m + d.
    decoded = from_transport(payload, "delta_int8", master)["w"]
    np.testing.assert_allclose(decoded, _f32(1.0 + 2**-10 + 0.0254, 1.99, -0.499, 0.0), atol=1e-6)
    assert np.all(np.abs(decoded - (master["w"] + trained["w"] - sent["w"])) <= 0.0002 / 2 + 1e-6)


def test_delta_int8_is_a_quarter_of_fp32_bytes_for_an_encoder(tiny_mae):
    state = encoder_state(tiny_mae)
    fp32 = state_nbytes(state)
    delta = state_nbytes(to_transport(state, "delta_int8", state))
    assert delta == fp32 // 4 + 4 * len(state)  # one byte per value plus one float32 scale per tensor
    assert 0.25 < delta / fp32 < 0.27
