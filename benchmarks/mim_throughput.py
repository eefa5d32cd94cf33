"""MIM pre-training throughput: endofed's MaskedAutoencoder3D vs MONAI's MaskedAutoEncoderViT, same run.

Times full training steps (mask, forward, per-patch-normalised masked MSE, backward, AdamW step) on random
volumes already on the device, and prints volumes/s, model FLOPs per volume (counted once with
``torch.utils.flop_counter.FlopCounterMode``, forward + backward), MFU against ``--peak-tflops`` and peak
memory. Runs:

  ours        endofed MAE; bf16 autocast + fused AdamW on CUDA (fp32 on CPU), masks drawn on the device
  monai-tf32  MONAI MaskedAutoEncoderViT in fp32 with TF32 matmuls (its default way of running)
  monai-bf16  the same under bf16 autocast

The two models tokenise differently: ours embeds each modality separately (N = 2 x grid tokens), MONAI fuses
the channels into one token (N = grid). Volumes/s is the figure of merit; MFU shows how well each uses the GPU.
Defaults are the reference setting: ViT-B (768 x 12, 12 heads, MLP 3072), decoder 384 x 4 (12 heads, MLP
1536), ROI 128 x 128 x 64, patch 16 x 16 x 8, batch 128, mask ratio 0.75. ``--tiny`` is a CPU smoke check.

Usage: python benchmarks/mim_throughput.py [--tiny] [--batch 128] [--steps 20] [--compile] [--runs ours,monai-tf32]
Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.networks.nets import MaskedAutoEncoderViT
from torch.utils.flop_counter import FlopCounterMode

from endofed.models.mae import MaskedAutoencoder3D
from endofed.models.patches import patchify
from endofed.models.vit3d import ViT3D
from endofed.ssl.loss import masked_patch_mse
from endofed.ssl.masking import make_mask, num_visible

RUNS = ("ours", "monai-tf32", "monai-bf16")


@dataclass(frozen=True)
class Setting:
    """Model, volume and batch sizes of one comparison."""

    roi: tuple[int, int, int]
    patch: tuple[int, int, int]
    embed: int
    depth: int
    heads: int
    decoder: int
    decoder_depth: int
    decoder_heads: int
    batch: int
    ratio: float = 0.75
    mlp_ratio: float = 4.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model and volumes (CPU smoke check)")
    parser.add_argument("--batch", type=int, default=None, help="volumes per step (default 128; tiny 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; tiny 1)")
    parser.add_argument("--runs", default="ours,monai-tf32", help=f"comma-separated subset of {RUNS}")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (CUDA only)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for MFU (H100 SXM bf16 dense)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    bad = [r for r in args.runs.split(",") if r not in RUNS]
    if bad:
        parser.error(f"unknown run(s) {bad}; choose from {RUNS}")
    return args


def make_setting(args: argparse.Namespace) -> Setting:
    if args.tiny:
        return Setting((32, 32, 16), (16, 16, 8), 48, 2, 4, 24, 1, 4, args.batch or 2)  # MONAI: widths % 6 == 0
    return Setting((128, 128, 64), (16, 16, 8), 768, 12, 12, 384, 4, 12, args.batch or 128)


def build_ours(s: Setting, device: torch.device) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    encoder = ViT3D(s.roi, s.patch, s.embed, s.depth, s.heads, s.mlp_ratio)
    model = MaskedAutoencoder3D(encoder, s.decoder, s.decoder_depth, s.decoder_heads, s.mlp_ratio).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    visible = num_visible(2, encoder.tokens_per_modality, s.ratio)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        mask = make_mask("independent", x.shape[0], 2, encoder.tokens_per_modality, s.ratio, generator)
        pred = model(x, mask, visible)
        return masked_patch_mse(pred, patchify(x, s.patch), mask)

    return model, loss_fn


def build_monai(s: Setting, device: torch.device) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    model = MaskedAutoEncoderViT(
        in_channels=2,
        img_size=s.roi,
        patch_size=s.patch,
        hidden_size=s.embed,
        mlp_dim=int(s.embed * s.mlp_ratio),
        num_layers=s.depth,
        num_heads=s.heads,
        masking_ratio=s.ratio,
        decoder_hidden_size=s.decoder,
        decoder_mlp_dim=int(s.decoder * s.mlp_ratio),
        decoder_num_layers=s.decoder_depth,
        decoder_num_heads=s.decoder_heads,
        qkv_bias=True,
    ).to(device)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        pred, mask = model(x)  # (B, L, C * P), (B, L) int, 1 = hidden
        b, c = x.shape[:2]
        target = patchify(x, s.patch).view(b, c, -1, pred.shape[-1] // c).transpose(1, 2).reshape(pred.shape)
        return masked_patch_mse(pred, target, mask.bool())

    return model, loss_fn


def time_run(name: str, s: Setting, args: argparse.Namespace, device: torch.device) -> dict[str, float | str]:
    cuda = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = name == "monai-tf32"
    torch.backends.cudnn.allow_tf32 = name == "monai-tf32"
    model, loss_fn = build_ours(s, device) if name == "ours" else build_monai(s, device)
    if name == "ours" and args.compile and cuda:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    autocast = cuda and name in ("ours", "monai-bf16")
    x = torch.rand(s.batch, 2, *s.roi, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    steps = args.steps or (2 if args.tiny else 20)
    for _ in range(warmup):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_step = counter.get_total_flops()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    step_rate = steps / seconds
    return {
        "run": name,
        "volumes_per_s": step_rate * s.batch,
        "gflop_per_volume": flops_per_step / s.batch / 1e9,
        "mfu": flops_per_step * step_rate / (args.peak_tflops * 1e12),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    s = make_setting(args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}; {s}")
    print(
        f"MFU against {args.peak_tflops:.0f} TFLOP/s; attention FLOPs of CPU SDPA kernels are not counted", flush=True
    )
    results = []
    for run in args.runs.split(","):
        try:
            results.append(time_run(run, s, args, device))
        except torch.cuda.OutOfMemoryError:
            results.append({"run": run, "note": "out of memory"})
        except ImportError as exc:  # MONAI's transformer blocks need einops, an optional MONAI dependency
            results.append({"run": run, "note": f"cannot build ({exc.__class__.__name__}): pip install einops"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"\n{'run':12s} {'vol/s':>9s} {'GFLOP/vol':>10s} {'MFU':>7s} {'peak GiB':>9s} {'params M':>9s}")
    for r in results:
        if "note" in r:
            print(f"{r['run']:12s} {r['note']}")
            continue
        print(
            f"{r['run']:12s} {r['volumes_per_s']:9.1f} {r['gflop_per_volume']:10.1f} {r['mfu']:7.1%} "
            f"{r['peak_gib']:9.1f} {r['params_m']:9.1f}"
        )
    timed = {r["run"]: r["volumes_per_s"] for r in results if "note" not in r}
    if "ours" in timed and "monai-tf32" in timed:
        print(f"\nours / monai-tf32 throughput: {float(timed['ours']) / float(timed['monai-tf32']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
