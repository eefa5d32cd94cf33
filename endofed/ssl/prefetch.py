"""Move training batches to the device; on CUDA, copy the next batch while the current step computes.

A plain ``batch.to("cuda", non_blocking=True)`` runs on the compute stream, so the copy of a large 3D batch
(128 x 2 x 128 x 128 x 64 float32 is 1 GiB) would sit between two steps. Here batch ``i + 1`` is copied on a
side stream as soon as step ``i`` starts, and the compute stream waits only for the event of its own batch.
The copy is asynchronous only from pinned host memory (``DataLoader(..., pin_memory=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch

BATCH_KEYS = ("image", "mask")  # what the pre-training loop uses; labels and ids stay on the host

_Pending = tuple[dict[str, torch.Tensor], "torch.cuda.Event"]


def _move(batch: Mapping[str, torch.Tensor], device: torch.device, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The ``keys`` present in ``batch``, on ``device``."""
    return {key: batch[key].to(device, non_blocking=True) for key in keys if key in batch}


def device_batches(
    loader: Iterable[Mapping[str, torch.Tensor]], device: torch.device, keys: Sequence[str] = BATCH_KEYS
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the batches of ``loader`` on ``device``, one copy ahead on CUDA.

    Args:
        loader: batches (mappings of tensors).
        device: target device.
        keys: which entries to move; others are dropped.

    Yields:
        ``{key: tensor on device}`` per batch, in order.
    """
    if device.type != "cuda":
        for batch in loader:
            yield _move(batch, device, keys)
        return
    compute = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)

    def start(batch: Mapping[str, torch.Tensor]) -> _Pending:
        with torch.cuda.stream(side):
            moved = _move(batch, device, keys)
            ready = torch.cuda.Event()
            ready.record(side)
        return moved, ready

    def finish(pending: _Pending) -> dict[str, torch.Tensor]:
        moved, ready = pending
        compute.wait_event(ready)
        for tensor in moved.values():
            tensor.record_stream(compute)  # the allocator must not reuse it before the step is done
        return moved

    pending: _Pending | None = None
    for batch in loader:
        following = start(batch)
        if pending is not None:
            yield finish(pending)
        pending = following
    if pending is not None:
        yield finish(pending)
