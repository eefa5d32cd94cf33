"""Each site returns the received weights plus a site-specific offset, so the aggregate is known exactly."""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS


class Site(NumPyClient):
    """Site k adds (k + 1) / 100 to every weight (a stand-in for local training)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        """Return the weights moved by this site's offset, as from 10 training examples."""
        return [p + np.float32(self.offset) for p in parameters], 10, {}


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    """The simulated site of this partition."""
    return Site((int(context.node_config["partition-id"]) + 1) / 100).to_client()


def maybe_secagg(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """SecAgg+ when the server runs its workflow; plain otherwise (one app for both arms of the benchmark)."""
    if msg.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(client_fn=client_fn, mods=[maybe_secagg])
