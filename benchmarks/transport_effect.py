"""Effect of the wire format (federation.transport) on federated MIM pre-training: loss and bytes per round.

The same federation runs once per transport: N synthetic sites (FederatedSite objects in this process, no Flower),
R pre-training rounds of FedAvg. Each round the server's float32 master weights go down in the transport's
down-link codec (delta_int8: the int8 down-link of endofed.federated.downlink, bf16 in round 1), every site trains
on what it decoded, and its reply comes back in the up-link codec; exactly
as server/strategies.py does, a delta reply is added to the float32 master weights, any other reply is decoded
to float32, and the average weighted by volumes becomes the new master. Everything else (data, seeds, masks,
batch order) is identical between transports, so the differences come from the wire format alone.

Printed per transport: the last round's training loss (volume-weighted mean over sites), the MIM loss of the
final global encoder with each site's own decoder on fixed masks (the sites' pre-training volumes and, apart,
their held-out test volumes), the distance of the final encoder from the fp32 run's, and the bytes per round
per site (down, up, and both ways as a share of the full MAE, encoder + decoder, sent both ways in fp32).

Usage: python benchmarks/transport_effect.py [--sites 3] [--subjects 8] [--rounds 4] [--local-epochs 1]
           [--config configs/tiny.yaml] [--set key=value ...] [--transports fp32 bf16 delta_int8]
Takes a few minutes on a 2-core CPU with the tiny config.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from endofed.config import TRANSPORTS, ExperimentConfig, load_config, load_site_config
from endofed.data.loaders import case_dataset, make_loader
from endofed.federated.bytes import from_transport, link_modes, state_nbytes, to_transport
from endofed.federated.downlink import DownLink
from endofed.federated.protocol import MAE_STATE, NUM_EXAMPLES, PRETRAIN
from endofed.federated.weights import encoder_state
from endofed.models import build_mae
from endofed.models.patches import patchify
from endofed.seeds import derive_seed
from endofed.ssl.loss import masked_patch_mse
from endofed.ssl.masking import make_mask, patch_validity
from endofed.synth.cohort import generate
from endofed.synth.profile import load_preset
from endofed.training.cohort import DEVELOPMENT_SPLITS
from endofed.training.federated_site import FederatedSite, RoundPlan
from endofed.training.local_state import full_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' FedAvg reference (not installed)
from tests.reference_aggregate import weighted_average  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
State = dict[str, np.ndarray]


@dataclasses.dataclass
class Outcome:
    """One transport's run: final master weights, per-round training loss, mean bytes per site and round."""

    master: State
    losses: list[float]
    down: float
    up: float
    train_mim: float = 0.0
    test_mim: float = 0.0


def make_sites(out: Path, count: int, subjects: int) -> list[Path]:
    """``count`` synthetic sites (demo3 protocols) at tiny scale, on the CPU."""
    presets = load_preset("demo3")
    sites = []
    for index in range(count):
        base = presets[index % len(presets)]
        cohort = dataclasses.replace(base.cohort, subjects=subjects)
        sites.append(dataclasses.replace(base, name=f"site{index}", cohort=cohort))
    paths = generate(sites, out, "tiny", seed=0)
    for path in paths:
        path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | {"device": "cpu"}))
    return paths


def run_federation(sites: list[FederatedSite], start: State, rounds: int, epochs: int, transport: str) -> Outcome:
    """R rounds of FedAvg over the given wire format; returns the final master weights, losses and bytes."""
    down_mode, up_mode = link_modes(transport)
    master, losses, down_bytes, up_bytes = dict(start), [], [], []
    link = DownLink() if down_mode == "delta_int8" else None  # the int8 down-link, as server/wire.py runs it
    for server_round in range(1, rounds + 1):
        if link is not None:
            broadcast = link.advance(master)
            sent = broadcast.view  # what every site holds after decoding its payload (delta or full)
            wires = [broadcast.for_node(index).payload for index in range(len(sites))]
        else:
            wires = [to_transport(master, down_mode)] * len(sites)
            sent = from_transport(wires[0], down_mode)  # what every site decodes (and takes a delta against)
        base = master if up_mode == "delta_int8" else sent  # as server/wire.py: deltas go onto fp32 master
        states, volumes, round_losses = [], [], []
        for index, site in enumerate(sites):
            state, metrics = site.train(sent, RoundPlan(PRETRAIN, server_round, rounds, local_epochs=epochs))
            payload = to_transport(state, up_mode, sent)
            up_bytes.append(state_nbytes(payload))
            states.append(from_transport(payload, up_mode, base))
            volumes.append(int(metrics[NUM_EXAMPLES]))
            round_losses.append(float(metrics["train-loss"]))
            down_bytes.append(state_nbytes(wires[index]))
            if link is not None:
                link.confirm(index)
        master = weighted_average(states, volumes)
        losses.append(float(np.average(round_losses, weights=volumes)))
        print(f"  {transport:10s} round {server_round}: train loss {losses[-1]:.4f}", flush=True)
    return Outcome(master, losses, float(np.mean(down_bytes)), float(np.mean(up_bytes)))


@torch.no_grad()
def mim_loss(site: FederatedSite, master: State, cfg: ExperimentConfig, splits: tuple[str, ...]) -> tuple[float, int]:
    """Volume-weighted MIM loss of the global encoder + this site's decoder on fixed masks; ``(loss, volumes)``."""
    cases = site.cohort.select(splits, labelled_only=False)
    if not cases:
        return 0.0, 0
    saved = site.saved_state(MAE_STATE)  # the site's decoder
    if saved is None:
        raise RuntimeError(f"site {site.site.site_id} saved no MIM state")
    model = build_mae(cfg.model, cfg.data.roi_size, state=full_state(master, saved.weights))
    model.eval()
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, site.site.site_id, "mim-eval"))
    total, volumes = 0.0, 0
    enc = model.encoder
    for batch in make_loader(case_dataset(site.site, cases), cfg.pretrain.batch_size, torch.device("cpu")):
        image, size = batch["image"], batch["image"].shape[0]
        mask = make_mask(cfg.pretrain.mask_mode, size, enc.num_modalities, enc.tokens_per_modality,
                         cfg.pretrain.mask_ratio, generator, cfg.pretrain.modality_drop_prob)  # fmt: skip
        valid = batch.get("mask")
        token_valid = None if valid is None else patch_validity(valid, enc.patch_size)
        loss = masked_patch_mse(model(image, mask), patchify(image, enc.patch_size), mask, token_valid)
        total, volumes = total + float(loss) * size, volumes + size
    return total / volumes, volumes


def evaluate(sites: list[FederatedSite], master: State, cfg: ExperimentConfig, splits: tuple[str, ...]) -> float:
    """MIM loss over every site's volumes of ``splits`` (volume-weighted)."""
    results = [mim_loss(site, master, cfg, splits) for site in sites]
    return sum(loss * n for loss, n in results) / max(1, sum(n for _, n in results))


def main() -> None:
    """Generate sites, run each transport, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=8, help="subjects per site (some are held out for testing)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--transports", nargs="+", default=list(TRANSPORTS), choices=TRANSPORTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny models gain nothing from more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    with torch.device("meta"):
        mae_bytes = 4 * sum(t.numel() for t in build_mae(cfg.model, cfg.data.roi_size).state_dict().values())
    root = Path(tempfile.mkdtemp(prefix="endofed-transport-effect-"))
    try:
        yamls = make_sites(root / "data", args.sites, args.subjects)
        start = {k: v.numpy() for k, v in encoder_state(build_mae(
            cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "global"))
        )).items()}  # fmt: skip
        results: dict[str, Outcome] = {}
        for transport in args.transports:
            sites = [FederatedSite(load_site_config(p), cfg, f"effect-{transport}") for p in yamls]
            result = run_federation(sites, start, args.rounds, args.local_epochs, transport)
            result.train_mim = evaluate(sites, result.master, cfg, DEVELOPMENT_SPLITS)
            result.test_mim = evaluate(sites, result.master, cfg, ("test",))
            results[transport] = result
        report(results, mae_bytes, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict[str, Outcome], mae_bytes: int, args: argparse.Namespace) -> None:
    """Print one row per transport."""
    print(f"\n{args.sites} sites, {args.subjects} subjects each, {args.rounds} rounds of {args.local_epochs} local "
          f"epoch(s), {args.config} "
          f"{' '.join(args.overrides)}; full MAE in fp32 = {mae_bytes / 1e6:.2f} MB")  # fmt: skip
    header = ("transport", "last train", "MIM train", "MIM test", "|w-w_fp32|", "kB down", "kB up", "both ways")
    print(" ".join(f"{h:>11s}" for h in header))
    reference = results["fp32"].master if "fp32" in results else None
    for transport, r in results.items():
        gap = float("nan")
        if reference is not None:
            diff = sum(float(((r.master[k] - reference[k]) ** 2).sum()) for k in reference)
            gap = float(np.sqrt(diff / sum(float((v**2).sum()) for v in reference.values())))
        losses = " ".join(f"{v:11.4f}" for v in (r.losses[-1], r.train_mim, r.test_mim))
        print(f"{transport:>11s} {losses} {gap:11.2e} {r.down / 1e3:11.1f} {r.up / 1e3:11.1f} "
              f"{(r.down + r.up) / (2 * mae_bytes):11.1%}")  # fmt: skip
    print("|w-w_fp32|: relative L2 distance of the final global encoder from the fp32 run's; "
          "both ways: (down + up) / (2 x full MAE in fp32)")  # fmt: skip


if __name__ == "__main__":
    main()
