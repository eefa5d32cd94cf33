"""One training round's valid updates, as the strategy folds them in: streamed into a sum, or buffered.

Streaming (FedAvg, FedProx, FedAdam): each decoded update goes into an
:class:`~endofed.federated.streaming.ExactSum` weighted by its ``num-examples``, and its reply keeps only its
metrics, so the round holds two float64 copies of the model whatever the number of sites. At the end
:meth:`RoundTally.replies` hands Flower's strategy a single reply holding the exact weighted mean with the total
``num-examples``: FedAvg's weighted average of one reply is that reply (weight 1.0), and FedAdam steps from it as
from any average.

Buffering (trimmed mean, median: order statistics need every value at once): each decoded reply is kept, and
:meth:`RoundTally.replies` returns them sorted by the digest of their update, so the result does not depend on
the order in which they arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from endofed.federated.protocol import ARRAYS, METRICS, NUM_EXAMPLES
from endofed.federated.rounds import update_digest
from endofed.federated.streaming import ExactSum


@dataclass
class RoundTally:
    """The valid updates of one round (see the module docstring)."""

    streaming: bool = True
    up_bytes: dict[int, int] = field(default_factory=dict)  # node -> bytes of the arrays it sent
    contents: list[RecordDict] = field(default_factory=list)  # the kept replies' metrics (streaming)
    seconds: float = 0.0  # time spent adding up (the round record's aggregation time includes it)
    _sum: ExactSum = field(default_factory=ExactSum)
    _buffered: list[tuple[str, Message]] = field(default_factory=list)
    _template: Message | None = None  # a kept reply, emptied: carries the mean to Flower's aggregation

    @property
    def count(self) -> int:
        """How many valid updates the round has."""
        return self._sum.count if self.streaming else len(self._buffered)

    def add(self, reply: Message, decoded: dict[str, np.ndarray], weight: int) -> None:
        """Fold in one valid reply whose float32 weights are ``decoded`` and whose checked claim is ``weight``."""
        if not self.streaming:
            reply.content[ARRAYS] = ArrayRecord({key: Array(value) for key, value in decoded.items()})
            self._buffered.append((update_digest(decoded), reply))
            return
        self._sum.add(decoded, weight)
        self.contents.append(RecordDict({METRICS: reply.content[METRICS]}))
        reply.content = RecordDict()  # the arrays go now: nothing of this reply's weights stays
        if self._template is None:
            self._template = reply

    def replies(self) -> list[Message]:
        """What Flower's aggregation gets: the one mean reply (streaming), or the kept replies in digest order."""
        if not self.streaming:
            return [reply for _, reply in sorted(self._buffered, key=lambda item: item[0])]
        if self._template is None:
            return []
        mean = ArrayRecord({key: Array(np.asarray(value)) for key, value in self._sum.mean().items()})
        self._template.content = RecordDict({ARRAYS: mean, METRICS: MetricRecord({NUM_EXAMPLES: self._sum.total})})
        return [self._template]
