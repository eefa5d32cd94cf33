"""Token masks for masked image modelling: which tokens the encoder does not see (pure, explicit RNG).

A mask is a ``(B, N)`` bool tensor, ``True`` = hidden (to be reconstructed), in the modality-major token order
of :mod:`endofed.models.patches` (``N = M * L``: ``M`` modalities, ``L`` tokens each). Masks are drawn on the
device of the ``torch.Generator`` passed in, so a GPU run builds them on the GPU with no host round trip.

Every mode hides exactly ``k = round(ratio * L)`` tokens per modality on average and ``M * k`` per sample
**always**, so every sample of a batch has the same number of visible tokens and the encoder can run on a
dense ``(B, N - M * k, E)`` tensor (MAE's trick):

* ``independent`` (default): a separate random set of ``k`` tokens per modality, so the model must predict
  T1 from visible T2 at places where T1 is hidden, and vice versa.
* ``shared``: one random spatial set of ``k`` positions, hidden in every modality.
* ``modality_drop``: like ``independent``, but with probability ``drop_prob`` a sample hides one random
  modality whole; the remaining ``M * k - L`` hidden tokens are then drawn at random from the other
  modalities (with two modalities: exactly ``2k - L`` of the other one). This needs ``M * k >= L``
  (ratio >= 1/2 with T1 + T2).

Validity: masks do not look at the voxel validity mask (a site's field of view). Instead, tokens whose patch
lies entirely outside the field of view are excluded from the loss via :func:`patch_validity`; they may still
be visible to the encoder (as all-zero patches, which tells it where the field of view ends).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F

from endofed.models.patches import grid_size
from endofed.ssl.mask_modes import INDEPENDENT, MASK_MODES, MODALITY_DROP, SHARED

# (batch B, modalities M, tokens per modality L, ratio, generator, drop_prob) -> (B, M * L) bool, True = hidden
MaskFunction = Callable[[int, int, int, float, torch.Generator, float], torch.Tensor]


def hidden_per_modality(tokens_per_modality: int, ratio: float) -> int:
    """Number of hidden tokens per modality, ``round(ratio * L)``.

    Args:
        tokens_per_modality: ``L``, tokens of one modality.
        ratio: fraction to hide, in (0, 1).

    Returns:
        ``k`` with ``0 < k < L``.

    Raises:
        ValueError: if ``ratio`` is outside (0, 1) or rounds to hiding none or all tokens.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio!r}")
    if tokens_per_modality < 2:
        raise ValueError(f"masking needs at least 2 tokens per modality, got {tokens_per_modality!r}")
    hidden = round(ratio * tokens_per_modality)
    if not 0 < hidden < tokens_per_modality:
        raise ValueError(
            f"mask ratio {ratio!r} hides {hidden} of {tokens_per_modality} tokens per modality; "
            "at least one token must be hidden and one visible"
        )
    return hidden


def num_visible(num_modalities: int, tokens_per_modality: int, ratio: float) -> int:
    """Visible tokens per sample, the same in every mode: ``M * (L - round(ratio * L))``.

    Args:
        num_modalities: ``M``.
        tokens_per_modality: ``L``.
        ratio: fraction to hide, in (0, 1).

    Returns:
        The encoder's sequence length during pre-training.
    """
    return num_modalities * (tokens_per_modality - hidden_per_modality(tokens_per_modality, ratio))


def _lowest_k(noise: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask, same shape as ``noise (..., T)``, True at the ``k`` smallest entries of the last axis."""
    idx = noise.argsort(dim=-1)[..., :k]
    return torch.zeros_like(noise, dtype=torch.bool).scatter_(-1, idx, True)


def independent_mask(
    batch: int, num_modalities: int, tokens_per_modality: int, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """Hide ``round(ratio * L)`` tokens per modality, drawn independently for every modality and sample.

    Args:
        batch: ``B``.
        num_modalities: ``M``.
        tokens_per_modality: ``L``.
        ratio: fraction to hide, in (0, 1).
        generator: random source; the mask is created on its device.

    Returns:
        ``(B, M * L)`` bool, True = hidden.
    """
    k = hidden_per_modality(tokens_per_modality, ratio)
    noise = torch.rand(batch, num_modalities, tokens_per_modality, generator=generator, device=generator.device)
    return _lowest_k(noise, k).flatten(1)


def shared_mask(
    batch: int, num_modalities: int, tokens_per_modality: int, ratio: float, generator: torch.Generator
) -> torch.Tensor:
    """Hide the same ``round(ratio * L)`` spatial positions in every modality.

    Args:
        batch: ``B``.
        num_modalities: ``M``.
        tokens_per_modality: ``L``.
        ratio: fraction to hide, in (0, 1).
        generator: random source; the mask is created on its device.

    Returns:
        ``(B, M * L)`` bool, True = hidden.
    """
    k = hidden_per_modality(tokens_per_modality, ratio)
    noise = torch.rand(batch, 1, tokens_per_modality, generator=generator, device=generator.device)
    return _lowest_k(noise, k).expand(batch, num_modalities, tokens_per_modality).flatten(1)


def modality_drop_mask(
    batch: int,
    num_modalities: int,
    tokens_per_modality: int,
    ratio: float,
    generator: torch.Generator,
    drop_prob: float,
) -> torch.Tensor:
    """Independent masks, except that with probability ``drop_prob`` a sample hides one modality whole.

    The first random draw is the independent mask, so ``drop_prob=0`` gives exactly :func:`independent_mask`
    for the same generator state. A dropping sample keeps ``M * k`` hidden tokens in total (see the module
    docstring).

    Args:
        batch: ``B``.
        num_modalities: ``M``.
        tokens_per_modality: ``L``.
        ratio: fraction to hide, in (0, 1); needs ``M * round(ratio * L) >= L``.
        generator: random source; the mask is created on its device.
        drop_prob: chance per sample of hiding one modality whole, in [0, 1].

    Returns:
        ``(B, M * L)`` bool, True = hidden.

    Raises:
        ValueError: for a bad ``drop_prob``, or a ratio too low to hide a whole modality.
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"modality drop probability must be in [0, 1], got {drop_prob!r}")
    k = hidden_per_modality(tokens_per_modality, ratio)
    if num_modalities * k < tokens_per_modality:
        raise ValueError(
            f"modality_drop with {num_modalities} modalities needs mask ratio >= 1/{num_modalities} "
            f"(a dropped modality alone hides {tokens_per_modality} > {num_modalities * k} tokens), got {ratio!r}"
        )
    device = generator.device
    base = independent_mask(batch, num_modalities, tokens_per_modality, ratio, generator)
    drop = torch.rand(batch, generator=generator, device=device) < drop_prob  # (B,)
    which = torch.randint(num_modalities, (batch,), generator=generator, device=device)  # (B,)
    noise = torch.rand(batch, num_modalities, tokens_per_modality, generator=generator, device=device)
    dropped = F.one_hot(which, num_modalities).bool()[:, :, None]  # (B, M, 1)
    noise = torch.where(dropped, noise - 1.0, noise)  # the dropped modality sorts first, so it is all hidden
    whole = _lowest_k(noise.flatten(1), num_modalities * k)  # (B, N)
    return torch.where(drop[:, None], whole, base)


# The one table of mask modes: name (endofed.ssl.mask_modes) -> function. Modes without a modality drop ignore
# drop_prob. A new mode is a function here, its name in mask_modes and a line in this table (docs/extending.md).
MASK_FUNCTIONS: Mapping[str, MaskFunction] = MappingProxyType(
    {
        SHARED: lambda b, m, n, ratio, generator, _drop: shared_mask(b, m, n, ratio, generator),
        INDEPENDENT: lambda b, m, n, ratio, generator, _drop: independent_mask(b, m, n, ratio, generator),
        MODALITY_DROP: modality_drop_mask,
    }
)


def make_mask(
    mode: str,
    batch: int,
    num_modalities: int,
    tokens_per_modality: int,
    ratio: float,
    generator: torch.Generator,
    drop_prob: float = 0.25,
) -> torch.Tensor:
    """Draw a ``(B, M * L)`` bool mask (True = hidden) in one of the modes of :data:`MASK_FUNCTIONS`.

    Args:
        mode: ``shared``, ``independent`` or ``modality_drop`` (:data:`endofed.ssl.mask_modes.MASK_MODES`).
        batch: ``B``.
        num_modalities: ``M``.
        tokens_per_modality: ``L``.
        ratio: fraction to hide, in (0, 1).
        generator: random source; the mask is created on its device.
        drop_prob: chance of dropping a whole modality (``modality_drop`` only).

    Returns:
        ``(B, M * L)`` bool mask with exactly ``M * round(ratio * L)`` True per row.

    Raises:
        ValueError: for an unknown mode or a bad ratio.
    """
    draw = MASK_FUNCTIONS.get(mode)
    if draw is None:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    return draw(batch, num_modalities, tokens_per_modality, ratio, generator, drop_prob)


def patch_validity(valid: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """Which tokens overlap a modality's field of view at all.

    Args:
        valid: ``(B, M, X, Y, Z)`` bool voxel validity (the dataset's ``mask``).
        patch: ``(px, py, pz)`` patch size.

    Returns:
        ``(B, M * L)`` bool, True where at least one voxel of the patch is valid.

    Raises:
        ValueError: if ``valid`` is not 5-D or not divisible by ``patch``.
    """
    if valid.ndim != 5:
        raise ValueError(f"validity mask must be (B, M, X, Y, Z), got shape {tuple(valid.shape)}")
    b, m = valid.shape[:2]
    gx, gy, gz = grid_size(valid.shape[2:], patch)  # validates divisibility
    px, py, pz = patch
    blocks = valid.reshape(b, m, gx, px, gy, py, gz, pz)
    return torch.any(blocks, dim=(3, 5, 7)).flatten(1)  # (B, M * L), token order of patchify
