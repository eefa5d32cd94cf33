"""The int8 down-link: the server sends each site an int8 delta against the weights that site last received.

With ``federation.transport: delta_int8`` both directions carry int8 deltas (about a quarter of fp32). Down,
the reference is the **view**: the weights the sites actually hold, which are not the server's float32 master
weights but their quantised image. Per round ``k`` of a run (:meth:`DownLink.advance`):

* the first round has no view yet: everyone gets the master weights as bfloat16 bits, and the view ``V_1`` is
  exactly those bf16 values;
* later, the payload is ``q = delta_int8(G_k - V_{k-1})`` and ``V_k = V_{k-1} + q * scale``. The quantisation
  error of one round is carried into the next round's delta (error feedback), so the view follows the master
  weights within half a step of the current delta, and never drifts;
* a site not known to hold ``V_{k-1}`` (first contact, a rejoining site, a site whose reply failed) gets ``V_k``
  itself in float32: the exact same view, so which site got which payload changes bytes only, never values.

Every message names the digest of the view it produces (``view-digest``) and, for a delta, the digest of the
base it must be added to (``base-digest``). A site decodes a delta only on a held copy whose digest matches,
checks the result against ``view-digest``, and otherwise refuses the message
(:class:`~endofed.federated.site_errors.BaseUnknown`): the server then sends it full weights next time.

The server decides per node from what it has seen (:meth:`DownLink.confirm`: a site that replied to a round
without an error committed that round's view). An evaluation message uses :meth:`DownLink.peek`: the same delta
that the next training round will send, without moving the chain (a site does not keep what it evaluated).

Pure numpy; the ServerApp and ClientApp glue lives in ``server/`` and ``client/``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from endofed.federated.arrays import per_entry
from endofed.federated.bytes import NumpyState, from_transport, to_transport

FULL_FIRST, FULL, DELTA = "bf16", "fp32", "delta_int8"  # the down-link codecs of a message
VIEW_PREFIX = "view."  # key prefix of the view in the server state file


def _entry_digest(key: str, value: np.ndarray) -> bytes:
    """SHA-256 of one entry: ``"<key>|<shape>|"`` and the float32 bytes."""
    array = np.ascontiguousarray(value, dtype=np.float32)
    digest = hashlib.sha256(f"{key}|{array.shape}|".encode())
    digest.update(array.reshape(-1).view(np.uint8).data)  # hashlib lets go of the GIL: entries hash in parallel
    return digest.digest()


def state_digest(state: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the SHA-256 of each float32 entry (key, shape, bytes), in key order.

    The same weights always have the same digest; a changed bit, key or shape changes it. Entries are hashed on
    parallel threads (:func:`~endofed.federated.arrays.per_entry`; a ViT-B encoder: 0.25 s on one core).
    Example: ``{"w": w}`` has ``sha256(sha256(b"w|(2,)|" + w.tobytes()).digest()).hexdigest()``.
    """
    parts = per_entry(lambda key: _entry_digest(key, state[key]), sorted(state))
    return hashlib.sha256(b"".join(parts)).hexdigest()


@dataclass(frozen=True)
class Outgoing:
    """One down-link payload: its codec, arrays, the base it needs (a delta only) and the digest of its result."""

    mode: str
    payload: NumpyState
    view_digest: str
    base_digest: str | None = None


class Broadcast:
    """One round's down-link payloads: the delta for the nodes holding its base, one full payload for the rest.

    Built once per message round; every node's message shares the same arrays (no copy per node).
    """

    def __init__(self, delta: Outgoing | None, view: NumpyState, digest: str, holders: set[int]) -> None:
        self.delta, self.view, self.digest, self.holders = delta, view, digest, set(holders)
        self._full: Outgoing | None = None

    def for_node(self, node: int) -> Outgoing:
        """The delta if ``node`` holds the base, else the full view (bf16 in the run's first round, else fp32)."""
        if self.delta is not None and int(node) in self.holders:
            return self.delta
        if self._full is None:
            if self.delta is None:  # no earlier view: this view is exactly bf16 values, which bf16 bits reproduce
                self._full = Outgoing(FULL_FIRST, to_transport(self.view, FULL_FIRST), self.digest)
            else:
                self._full = Outgoing(FULL, self.view, self.digest)
        return self._full


@dataclass
class DownLink:
    """The server's side of the int8 down-link: the current view, its digest and which nodes hold it."""

    view: NumpyState | None = None
    digest: str | None = None
    holders: set[int] = field(default_factory=set)  # nodes known to hold ``view``

    def advance(self, master: Mapping[str, np.ndarray]) -> Broadcast:
        """Start a training round on the master weights: the new view becomes current; returns its payloads.

        The nodes that held the previous view may take the delta; nobody holds the new view until
        :meth:`confirm` records it.
        """
        broadcast = self.peek(master)
        self.view, self.digest, self.holders = broadcast.view, broadcast.digest, set()
        return broadcast

    def peek(self, master: Mapping[str, np.ndarray]) -> Broadcast:
        """The payloads :meth:`advance` would send for ``master``, without changing anything (evaluations)."""
        weights = {key: np.asarray(value, dtype=np.float32) for key, value in master.items()}
        if self.view is None:
            view = from_transport(to_transport(weights, FULL_FIRST), FULL_FIRST)
            return Broadcast(None, view, state_digest(view), set())
        payload = to_transport(weights, DELTA, self.view)
        view = from_transport(payload, DELTA, self.view)
        digest = state_digest(view)
        return Broadcast(Outgoing(DELTA, payload, digest, self.digest), view, digest, self.holders)

    def confirm(self, node: int) -> None:
        """``node`` replied to this round without an error: it committed the current view."""
        self.holders.add(int(node))

    def export(self) -> tuple[NumpyState, dict[str, Any]]:
        """The view (``view.<key>`` arrays) and its digest and holders, for the server state (``--resume``)."""
        arrays = {f"{VIEW_PREFIX}{key}": value for key, value in (self.view or {}).items()}
        return arrays, {"digest": self.digest, "holders": sorted(self.holders)}

    def restore(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Continue from :meth:`export`'s output; the view must match its digest.

        Raises:
            ValueError: the saved view does not match its saved digest.
        """
        view = {k.removeprefix(VIEW_PREFIX): np.array(v, dtype=np.float32) for k, v in arrays.items()
                if k.startswith(VIEW_PREFIX)}  # fmt: skip
        if not view:
            return
        if state_digest(view) != meta.get("digest"):
            raise ValueError("the saved down-link view does not match its digest")
        self.view, self.digest = view, str(meta["digest"])
        self.holders = {int(node) for node in meta.get("holders", [])}
