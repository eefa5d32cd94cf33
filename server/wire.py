"""What the coordinator sends and how it reads what comes back: the wire half of the strategies' mixin.

Wire formats (``federation.transport``, codecs in :mod:`endofed.federated.bytes`): the server keeps float32
master weights and aggregates float32 arrays whatever travels.

* ``fp32`` and ``bf16``: one payload for every site; replies in the same codec.
* ``delta_int8``: int8 both ways. Down, each site gets the int8 delta against the weights it holds, or the full
  weights if it holds none the server knows of (:mod:`endofed.federated.downlink`, one
  :class:`~endofed.federated.downlink.DownLink` for the whole run, both phases). Up, a site's int8 delta is
  against exactly the weights it received (the view); the server adds each decoded delta to its float32 master
  weights (not to the view), so an update smaller than a quantisation step is not lost.

Every payload travels packed, one array per dtype (:mod:`endofed.federated.packing`): both ends derive its
layout from the encoder's shapes and the codec.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from endofed.federated.bytes import from_transport, link_modes, payload_layout, state_nbytes, to_transport
from endofed.federated.downlink import DELTA, Broadcast, DownLink, Outgoing
from endofed.federated.protocol import ARRAYS, BASE_DIGEST, CONFIG, DEFAULT_TRANSPORT, DOWN_CODEC, VIEW_DIGEST
from endofed.federated.validate import validate_update
from server.replies import as_numpy, from_record, to_record


class WireMixin:
    """Encoding per destination site, decoding and checking of replies (see the module docstring)."""

    transport: str = DEFAULT_TRANSPORT
    down: str = DEFAULT_TRANSPORT  # codec server -> site
    up: str = DEFAULT_TRANSPORT  # codec site -> server
    downlink: DownLink | None = None  # delta_int8 only: shared by the run's phases
    max_norm_ratio: float = 0.0  # bound on ||w - w_global|| / ||w_global|| (0 = off)

    def setup_wire(self, transport: str, downlink: DownLink | None = None) -> None:
        """The wire format; ``delta_int8`` needs the run's :class:`DownLink` (a new one if ``None``)."""
        self.transport = transport
        self.down, self.up = link_modes(transport)
        self.downlink = (downlink or DownLink()) if self.down == DELTA else None
        self._sent: dict[str, np.ndarray] = {}  # what the sites hold this round (their reply's delta reference)
        self._base: dict[str, np.ndarray] = {}  # what decoded replies are relative to
        self._broadcast: Broadcast | None = None
        self._down_bytes: dict[int, int] = {}  # node -> bytes of the arrays it was sent this round
        self._wire_bytes = 0  # bytes of the one payload of fp32 / bf16

    @property
    def delta(self) -> bool:
        """Whether sites reply with deltas (decoded as the float32 master weights + delta) or whole weights."""
        return self.up == DELTA

    def prepare_round(self, arrays: ArrayRecord) -> ArrayRecord:
        """Encode the round's float32 master weights for the down-link; remembers what the sites will hold.

        Returns:
            The one payload of fp32 / bf16; with ``delta_int8`` a placeholder that :meth:`address` replaces
            per site.
        """
        master = {k: np.array(v, dtype=np.float32) for k, v in as_numpy(arrays).items()}
        self._down_bytes = {}
        if self.downlink is not None:
            self._broadcast = self.downlink.advance(master)
            self._sent, self._base = self._broadcast.view, master
            return ArrayRecord()
        payload = to_transport(master, self.down)
        self._sent = payload if self.down == "fp32" else from_transport(payload, self.down)  # fp32: a copy already
        self._base = master if self.delta else self._sent
        self._wire_bytes = state_nbytes(payload)
        return to_record(payload)

    def address(self, messages: Iterable[Message], broadcast: Broadcast | None = None) -> list[Message]:
        """Each message with its destination's own payload (``delta_int8``); unchanged otherwise.

        Records the bytes each node is sent (:meth:`bytes_down`). All messages with the same payload share its
        arrays.
        """
        broadcast = broadcast or self._broadcast
        if self.downlink is None or broadcast is None:
            messages = list(messages)
            self._down_bytes |= {int(m.metadata.dst_node_id): self._wire_bytes for m in messages}
            return messages
        records: dict[int, ArrayRecord] = {}
        addressed = []
        for message in messages:
            node = int(message.metadata.dst_node_id)
            outgoing = broadcast.for_node(node)
            if id(outgoing) not in records:
                records[id(outgoing)] = to_record(outgoing.payload)
            config = ConfigRecord({**message.content[CONFIG], **_codec_config(outgoing)})
            content = RecordDict({ARRAYS: records[id(outgoing)], CONFIG: config})
            addressed.append(Message(content, dst_node_id=node, message_type=message.metadata.message_type))
            self._down_bytes[node] = state_nbytes(outgoing.payload)
        return addressed

    def bytes_down(self, node: int) -> int:
        """Bytes of the arrays ``node`` was sent this round."""
        return self._down_bytes.get(int(node), self._wire_bytes)

    def evaluation_payload(self, arrays: ArrayRecord) -> tuple[ArrayRecord, Broadcast | None]:
        """The encoder for an evaluation message: the fp32 / bf16 payload, or the down-link's payloads (no advance)."""
        if self.downlink is None:
            payload = to_transport(as_numpy(arrays), self.down)
            self._wire_bytes = state_nbytes(payload)
            return to_record(payload), None
        master = {k: np.array(v, dtype=np.float32) for k, v in as_numpy(arrays).items()}
        return ArrayRecord(), self.downlink.peek(master)

    def decode_reply(self, arrays: ArrayRecord) -> ArrayRecord:
        """A site's reply as float32 weights (its delta added to the master weights); its norm ratio is kept.

        Raises:
            ValueError: if the payload does not fit the wire format, or the weights do not fit those sent.
        """
        return ArrayRecord({k: Array(v) for k, v in self.decode_weights(arrays).items()})

    def decode_weights(self, arrays: ArrayRecord) -> dict[str, np.ndarray]:
        """:meth:`decode_reply` as numpy arrays (no round trip through Flower's serialised ``Array``)."""
        received = from_record(arrays, payload_layout({k: v.shape for k, v in self._sent.items()}, self.up))
        weights = from_transport(received, self.up, self._base if self.delta else None)
        self._last_norm = validate_update(weights, self._sent, self.max_norm_ratio or None)
        return weights

    def confirm(self, node: int) -> None:
        """``node`` answered this round without an error: it holds this round's view (int8 down-link)."""
        if self.downlink is not None:
            self.downlink.confirm(node)

    def export_wire(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The down-link's state for ``--resume`` (nothing without one)."""
        return self.downlink.export() if self.downlink is not None else ({}, {})


def _codec_config(outgoing: Outgoing) -> dict[str, str]:
    """The config entries that tell a site how to decode ``outgoing``."""
    entries = {DOWN_CODEC: outgoing.mode, VIEW_DIGEST: outgoing.view_digest}
    if outgoing.base_digest is not None:
        entries[BASE_DIGEST] = outgoing.base_digest
    return entries
