"""What ``--resume`` costs the coordinator: writing and reading ``server_state.safetensors`` once per round.

The state holds the float32 global encoder and, with FedAdam, its two moment arrays of the same size. This
times ``save_server_state`` (safetensors + SHA-256 + atomic rename, as the ServerApp does after every round)
and ``load_server_state`` (as ``--resume`` does once) for the encoder of the given config, per strategy.

Usage: python benchmarks/server_state_cost.py [--config configs/default.yaml] [--repeats 3] [--dir /tmp]
Prints the file size and the median seconds; compare them with the round time of your federation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord

from endofed.config import FederationConfig, load_config
from endofed.federated.weights import encoder_state
from endofed.models import build_mae

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the app's server/ package (not installed)
from server.app import STATE_FILE, load_server_state, save_server_state  # noqa: E402
from server.strategies import make_strategy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml", help="experiment config (its model is used)")
    parser.add_argument("--repeats", type=int, default=3, help="timed saves per strategy (median printed)")
    parser.add_argument("--dir", default=None, help="where to write (default: the system's temporary folder)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    encoder = {k: v.numpy() for k, v in encoder_state(build_mae(cfg.model, cfg.data.roi_size)).items()}
    values = sum(v.size for v in encoder.values())
    print(f"encoder of {args.config}: {values / 1e6:.1f} M parameters, {values * 4 / 1e6:.0f} MB in float32")
    record = ArrayRecord({k: Array(v) for k, v in encoder.items()})
    print(f"{'strategy':10} {'state MB':>9} {'save s':>7} {'load s':>7}")
    for name in ("fedavg", "fedadam"):
        strategy = make_strategy(FederationConfig(strategy=name), "pretrain", False, None)
        if name == "fedadam":  # after a round FedAdam holds two moment arrays per key
            strategy.m_t = {k: v.copy() for k, v in encoder.items()}  # type: ignore[attr-defined]
            strategy.v_t = {k: v.copy() for k, v in encoder.items()}  # type: ignore[attr-defined]
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            out = Path(folder)
            saves = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                save_server_state(out, "pretrain", 1, record, strategy, {"benchmark": True})
                saves.append(time.perf_counter() - started)
            started = time.perf_counter()
            load_server_state(out, {"benchmark": True})
            load = time.perf_counter() - started
            size = (out / STATE_FILE).stat().st_size / 1e6
        print(f"{name:10} {size:9.0f} {statistics.median(saves):7.2f} {load:7.2f}")


if __name__ == "__main__":
    main()
