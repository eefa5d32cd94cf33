"""Byte accounting and transport compression of federated states.

Flower's ``ArrayRecord`` carries numpy arrays, and numpy has no bfloat16, so every payload here is a dict of
plain numpy arrays:

* ``fp32``: float32 arrays, unchanged (4 bytes per value).
* ``bf16``: the raw bfloat16 bits of each value in a ``uint16`` array (2 bytes per value); decoding puts the
  16 bits back on top of a float32, which is exact, so the only error is the rounding when encoding
  (round-to-nearest-even, relative error <= 2**-8: 8 significant bits).
* ``delta_int8``: ``q = round((x - reference) / scale)`` as ``int8`` in ``[-127, 127]`` with one float32
  ``scale = max|x - reference| / 127`` per tensor, sent under ``<key>`` and ``<key>#scale`` (1 byte per value
  + 4 per tensor). Decoding gives ``reference + q * scale``; per element the error is at most ``scale / 2`` (plus
  float32 rounding: both ends compute in float32, with the same operations, so they decode the same bits).
  Both sides must hold the same reference (the global state of the round).

Decoded states are always float32.

A federation's ``transport`` (``federation.transport``) names the codec of each direction (:func:`link_modes`):
``fp32`` and ``bf16`` use their codec both ways; ``delta_int8`` sends int8 deltas both ways. Down, the delta is
against the weights the site received last round, which it keeps on disk (:mod:`endofed.federated.downlink`:
the first round, and a site that does not hold that base, get the full weights); up, against exactly the weights
it received this round, which the server also knows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from endofed.federated.arrays import StateLike, key_mismatch, per_entry, state_to_numpy, to_numpy
from endofed.federated.schema import ArraySpec

TRANSPORT_MODES = ("fp32", "bf16", "delta_int8")
_LINKS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16"), "delta_int8": ("delta_int8", "delta_int8")}
SCALE_SUFFIX = "#scale"
INT8_LEVELS = 127  # symmetric: -127..127, so that q and -q are both representable

NumpyState = dict[str, np.ndarray]


def state_nbytes(state: StateLike) -> int:
    """Total bytes of the array data in a state or payload (no framing, no key names).

    Example: a 10 x 10 float32 tensor is 400 bytes, as bf16 bits 200, as int8 delta 100 + 4 (scale).
    """
    total = 0
    for value in state.values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        else:
            total += int(to_numpy(value).nbytes)
    return total


def _check_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`TRANSPORT_MODES`."""
    if mode not in TRANSPORT_MODES:
        raise ValueError(f"transport mode must be one of {TRANSPORT_MODES}, got {mode!r}")


def link_modes(transport: str) -> tuple[str, str]:
    """The codecs of a federation transport: ``(down, up)``, server -> site and site -> server.

    Example: ``link_modes("bf16") == ("bf16", "bf16")``.

    Raises:
        ValueError: on an unknown transport.
    """
    _check_mode(transport)
    return _LINKS[transport]


def payload_layout(shapes: Mapping[str, tuple[int, ...]], mode: str) -> dict[str, ArraySpec]:
    """Keys, numpy dtypes and shapes of the payload that encodes float32 weights of these shapes in ``mode``.

    Example: ``{"w": (3, 4)}`` is ``{"w": ("float32", (3, 4))}`` in fp32, ``{"w": ("uint16", (3, 4))}`` in bf16,
    and ``{"w": ("int8", (3, 4)), "w#scale": ("float32", (1,))}`` in delta_int8. A site's reply must have
    exactly this layout for the encoder it received (:mod:`endofed.federated.schema`).
    """
    _check_mode(mode)
    value_dtype = {"fp32": "float32", "bf16": "uint16", "delta_int8": "int8"}[mode]
    layout = {key: ArraySpec(value_dtype, tuple(shape)) for key, shape in shapes.items()}
    if mode == "delta_int8":
        layout |= {key + SCALE_SUFFIX: ArraySpec("float32", (1,)) for key in shapes}
    return layout


def zero_delta(shapes: Mapping[str, tuple[int, ...]]) -> NumpyState:
    """The delta_int8 payload of an unchanged state (every ``q`` and every scale 0), without any reference."""
    payload: NumpyState = {}
    for key, shape in shapes.items():
        payload[key] = np.zeros(shape, dtype=np.int8)
        payload[key + SCALE_SUFFIX] = np.zeros(1, dtype=np.float32)
    return payload


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float values to bfloat16 and return the raw 16 bits as ``uint16`` (same shape)."""
    # torch.tensor copies, so read-only record buffers are fine; the cast rounds to nearest even.
    tensor = torch.tensor(np.asarray(values, dtype=np.float32)).to(torch.bfloat16)
    return tensor.view(torch.int16).numpy().view(np.uint16).copy()


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`bf16_bits`: ``uint16`` bfloat16 bits -> float32 values.

    Raises:
        ValueError: if ``bits`` is not ``uint16``.
    """
    if bits.dtype != np.uint16:
        raise ValueError(f"bf16 bits must be uint16, got dtype {bits.dtype}")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _require_reference(reference: StateLike | None, mode: str) -> NumpyState:
    """The reference state as numpy, or a ``ValueError`` if a delta mode has none."""
    if reference is None:
        raise ValueError(f"transport mode {mode!r} needs the reference state (the round's global weights)")
    return state_to_numpy(reference)


def _encode_entry(value: np.ndarray, reference: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
    """One entry's int8 delta and its scale (see the module docstring)."""
    if value.shape != reference.shape:
        raise ValueError(f"{key!r} has shape {value.shape}, reference has {reference.shape}")
    delta = np.subtract(value, reference, dtype=np.float32)  # float32 throughout: half the memory traffic
    peak = max(float(delta.max()), -float(delta.min())) if delta.size else 0.0  # max |delta|, no temporary
    if not math.isfinite(peak):
        raise ValueError(f"{key!r} has NaN or Inf values; cannot quantise them")
    scale = np.array([peak / INT8_LEVELS], dtype=np.float32)
    if not scale[0] > 0:
        return np.zeros(delta.shape, dtype=np.int8), scale
    np.divide(delta, scale[0], out=delta)
    np.rint(delta, out=delta)
    return np.clip(delta, -INT8_LEVELS, INT8_LEVELS, out=delta).astype(np.int8), scale


def _encode_delta(state: NumpyState, reference: NumpyState) -> NumpyState:
    """int8 delta encoding (see the module docstring); entries on parallel threads."""
    mismatch = key_mismatch(reference.keys(), state.keys())
    if mismatch:
        raise ValueError(f"state keys differ from the delta reference: {mismatch}")
    encoded = per_entry(lambda key: _encode_entry(state[key], reference[key], key), state)
    payload: NumpyState = {}
    for key, (quantised, scale) in zip(state, encoded, strict=True):
        payload[key], payload[key + SCALE_SUFFIX] = quantised, scale
    return payload


def _decode_entry(quantised: np.ndarray, scale: np.ndarray, reference: np.ndarray, key: str) -> np.ndarray:
    """One entry of :func:`_decode_delta`: ``reference + q * scale`` in float32, in one new array."""
    if quantised.dtype != np.int8 or quantised.shape != reference.shape:
        raise ValueError(f"{key!r} must be int8 of shape {reference.shape}, got {quantised.dtype} {quantised.shape}")
    if scale.shape != (1,) or not np.isfinite(scale).all() or scale[0] < 0:
        raise ValueError(f"{key + SCALE_SUFFIX!r} must be one finite scale >= 0, got {scale!r}")
    decoded = quantised.astype(np.float32)
    np.multiply(decoded, np.float32(scale[0]), out=decoded)
    np.add(decoded, reference, out=decoded, dtype=np.float32)
    return decoded


def _decode_delta(payload: NumpyState, reference: NumpyState) -> NumpyState:
    """Inverse of :func:`_encode_delta`: ``reference + q * scale`` as float32; entries on parallel threads."""
    expected = [*reference, *(key + SCALE_SUFFIX for key in reference)]
    mismatch = key_mismatch(expected, payload.keys())
    if mismatch:
        raise ValueError(f"delta_int8 payload does not match the reference: {mismatch}")
    decode = lambda key: _decode_entry(payload[key], payload[key + SCALE_SUFFIX], reference[key], key)  # noqa: E731
    return dict(zip(reference, per_entry(decode, reference), strict=True))


def to_transport(state: StateLike, mode: str = "fp32", reference: StateLike | None = None) -> NumpyState:
    """Encode a state for sending.

    Args:
        state: float weights (numpy arrays or tensors).
        mode: one of :data:`TRANSPORT_MODES`.
        reference: the state both sides hold (``delta_int8`` only).

    Returns:
        The payload: a dict of numpy arrays (see the module docstring for each mode's layout).

    Raises:
        ValueError: on an unknown mode, a missing or mismatched reference, or non-finite values (int8).
    """
    _check_mode(mode)
    arrays = state_to_numpy(state)
    if mode == "fp32":
        return {key: np.array(value, dtype=np.float32, copy=True) for key, value in arrays.items()}
    if mode == "bf16":
        return {key: bf16_bits(value) for key, value in arrays.items()}
    return _encode_delta(arrays, _require_reference(reference, mode))


def from_transport(payload: StateLike, mode: str = "fp32", reference: StateLike | None = None) -> NumpyState:
    """Decode a received payload back into float32 weights.

    Args:
        payload: what :func:`to_transport` produced (possibly after a round trip through Flower records).
        mode: the mode it was encoded with.
        reference: the same reference the sender used (``delta_int8`` only).

    Returns:
        ``{key: float32 array}``.

    Raises:
        ValueError: on an unknown mode, a payload of the wrong dtype or layout, or a missing reference.
    """
    _check_mode(mode)
    arrays = state_to_numpy(payload)
    if mode == "fp32":
        for key, value in arrays.items():
            if value.dtype != np.float32:
                raise ValueError(f"fp32 payload {key!r} has dtype {value.dtype}, expected float32")
        return {key: np.array(value, copy=True) for key, value in arrays.items()}
    if mode == "bf16":
        for key, value in arrays.items():
            if value.dtype != np.uint16:
                raise ValueError(f"bf16 payload {key!r} has dtype {value.dtype}, expected uint16 bits")
        return {key: bf16_values(value) for key, value in arrays.items()}
    return _decode_delta(arrays, _require_reference(reference, mode))
