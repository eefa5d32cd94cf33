"""Bytes per site per round of each federation transport, as a share of the full MAE in fp32, at a given model size.

The payloads are the real ones: the ServerApp's down-link (``endofed.federated.downlink.DownLink``, as
``server/wire.py`` runs it) and a site's reply codec (``endofed.federated.bytes.to_transport``), applied to the
encoder of ``--config`` (default configs/default.yaml: ViT-B size). No training: the "trained" weights are the
received ones plus small noise, which has no effect on the byte counts (every codec's size depends on the shapes
only). Three rounds per transport: round 1 (no site holds a base: bf16 down for delta_int8), round 2 (every site
answered round 1: int8 down), and a site that missed round 2 (full fp32 down).

Usage: python benchmarks/federation_bytes.py [--config configs/default.yaml] [--set key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from endofed.config import TRANSPORTS, load_config
from endofed.federated.bytes import from_transport, link_modes, state_nbytes, to_transport
from endofed.federated.downlink import DownLink
from endofed.federated.weights import encoder_state
from endofed.models import build_mae

ROOT = Path(__file__).resolve().parents[1]


def model_states(config: str, overrides: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """The encoder's float32 weights and the bytes of the whole MAE (encoder + decoder) in fp32."""
    cfg = load_config(config, overrides)
    model = build_mae(cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(0))
    full = 4 * sum(t.numel() for t in model.state_dict().values())
    return {k: v.numpy() for k, v in encoder_state(model).items()}, full


def rounds(encoder: dict[str, np.ndarray], transport: str) -> list[tuple[str, int, int]]:
    """``(label, bytes down, bytes up)`` for round 1, round 2, and round 2 for a site that missed round 1."""
    down, up = link_modes(transport)
    rng = np.random.default_rng(0)
    masters = [encoder, {k: v + rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in encoder.items()}]
    link, rows = DownLink(), []
    for index, master in enumerate(masters):
        if down == "delta_int8":
            broadcast = link.advance(master)
            sent, outgoing = broadcast.view, [broadcast.for_node(1), broadcast.for_node(2)]
            payloads = [o.payload for o in outgoing]
            link.confirm(1)  # site 1 answers every round; site 2 answers none
        else:
            payloads = [to_transport(master, down)] * 2
            sent = from_transport(payloads[0], down)
        trained = {k: v + rng.normal(0, 1e-4, v.shape).astype(np.float32) for k, v in sent.items()}
        reply = state_nbytes(to_transport(trained, up, sent))
        rows.append((f"round {index + 1}", state_nbytes(payloads[0]), reply))
        if index == 1:
            rows.append(("round 2, site that missed round 1", state_nbytes(payloads[1]), reply))
    return rows


def main() -> None:
    """Print the bytes table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    encoder, full = model_states(args.config, args.overrides)
    print(f"{Path(args.config).name}: encoder {state_nbytes(encoder) / 1e6:.1f} MB, full MAE {full / 1e6:.1f} MB "
          f"in fp32 ({len(encoder)} encoder tensors); shares are of the full MAE in fp32, both ways = "
          "(down + up) / (2 x full MAE)")  # fmt: skip
    print("| transport | round | MB down | MB up | down | up | both ways |\n|---|---|---:|---:|---:|---:|---:|")
    for transport in TRANSPORTS:
        for label, down, up in rounds(encoder, transport):
            print(f"| {transport} | {label} | {down / 1e6:.1f} | {up / 1e6:.1f} | {down / full:.1%} | {up / full:.1%} "
                  f"| {(down + up) / (2 * full):.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
