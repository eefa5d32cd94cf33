"""What a pre-trained MAE reconstructs, as plain arrays (pure; drawing is in :mod:`endofed.io.figures`).

Predictions are in normalised-patch units (:mod:`endofed.ssl.loss`), so they are mapped back to intensities
with each *true* patch's mean and standard deviation, as MAE's own visualisation does: the preview shows
whether the model gets the structure inside hidden patches right, not whether it knows their mean intensity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from endofed.config import PretrainConfig
from endofed.models.mae import MaskedAutoencoder3D
from endofed.models.patches import patchify, unpatchify
from endofed.ssl.masking import make_mask, num_visible


def reconstruction_preview(
    image: torch.Tensor, mask_tokens: torch.Tensor, pred: torch.Tensor, patch: Sequence[int], eps: float = 1e-6
) -> dict[str, np.ndarray]:
    """Input, masked input and reconstruction of one case as volumes.

    Args:
        image: ``(M, X, Y, Z)`` input volume.
        mask_tokens: ``(N,)`` bool, True = hidden.
        pred: ``(N, P)`` model prediction for this case (normalised-patch units).
        patch: ``(px, py, pz)`` patch size.
        eps: the loss's variance epsilon.

    Returns:
        float32 ``(M, X, Y, Z)`` arrays ``input``, ``masked`` (hidden patches set to 0) and ``reconstruction``
        (visible patches from the input, hidden ones predicted), and bool ``hidden`` (voxels of hidden patches).

    Raises:
        ValueError: if the shapes do not agree.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (M, X, Y, Z), got shape {tuple(image.shape)}")
    target = patchify(image[None].float(), patch)[0]  # (N, P)
    if mask_tokens.shape != target.shape[:1] or pred.shape != target.shape:
        raise ValueError(
            f"mask_tokens {tuple(mask_tokens.shape)} and pred {tuple(pred.shape)} must be ({target.shape[0]},) and "
            f"{tuple(target.shape)} for an image of shape {tuple(image.shape)} and patch {tuple(patch)}"
        )
    mean = target.mean(dim=-1, keepdim=True)
    std = torch.sqrt(target.var(dim=-1, keepdim=True, correction=0) + eps)
    predicted = pred.detach().float().to(target.device) * std + mean  # (N, P) in intensity units
    hidden = mask_tokens.to(target.device)[:, None].expand_as(target)  # (N, P)
    volumes = {
        "input": target,
        "masked": torch.where(hidden, torch.zeros_like(target), target),
        "reconstruction": torch.where(hidden, predicted, target),
        "hidden": hidden,
    }
    spatial = tuple(image.shape[1:])
    return {name: unpatchify(v[None], patch, spatial)[0].cpu().numpy() for name, v in volumes.items()}


@torch.no_grad()
def reconstruct_cases(
    model: MaskedAutoencoder3D, image: torch.Tensor, cfg: PretrainConfig, generator: torch.Generator
) -> list[dict[str, np.ndarray]]:
    """Mask a batch as in pre-training, run the model in eval mode and return one preview per case.

    Args:
        model: the masked autoencoder (on the generator's device).
        image: ``(B, M, X, Y, Z)`` volumes.
        cfg: pre-training config (mask mode, ratio, drop probability).
        generator: random source of the masks.

    Returns:
        :func:`reconstruction_preview` of every case.
    """
    enc = model.encoder
    mask = make_mask(
        cfg.mask_mode,
        image.shape[0],
        enc.num_modalities,
        enc.tokens_per_modality,
        cfg.mask_ratio,
        generator,
        cfg.modality_drop_prob,
    )
    was_training = model.training
    model.eval()
    try:
        image = image.to(generator.device)
        pred = model(image, mask, num_visible(enc.num_modalities, enc.tokens_per_modality, cfg.mask_ratio))
    finally:
        model.train(was_training)
    return [reconstruction_preview(image[i], mask[i], pred[i], enc.patch_size) for i in range(image.shape[0])]
