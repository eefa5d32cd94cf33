"""Transformer pieces shared by the ViT3D encoder and the MAE decoder.

Pre-norm blocks (``x + drop_path(attn(norm1(x)))``, ``x + drop_path(mlp(norm2(x)))``) with one fused QKV
projection and :func:`torch.nn.functional.scaled_dot_product_attention`, so the GPU picks a flash or
memory-efficient kernel (bf16 under autocast). State-dict names follow timm: ``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``rate`` during training.

    Uses the global RNG, like :class:`torch.nn.Dropout`. Build it only for ``rate > 0``; otherwise use
    ``nn.Identity()`` (see :func:`drop_path_or_identity`).
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate!r}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop whole samples of ``x: (B, ...)``, rescaling the kept ones by ``1 / (1 - rate)``."""
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        """Show the rate in ``print(model)``."""
        return f"rate={self.rate}"


def drop_path_or_identity(rate: float) -> nn.Module:
    """``DropPath(rate)`` if ``rate > 0`` else ``nn.Identity()`` (no branch inside ``forward``)."""
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class Attention(nn.Module):
    """Multi-head self-attention with a fused QKV projection and SDPA."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} must be divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the token axis.

        Args:
            x: ``(B, N, E)`` tokens.
            attn_mask: optional bool mask broadcastable to ``(B, heads, N, N)``; True = may attend.

        Returns:
            ``(B, N, E)``.
        """
        b, n, e = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, heads, N, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, e))


class Mlp(nn.Module):
    """Two-layer GELU MLP, ``E -> hidden -> E``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, N, E) -> (B, N, E)``."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: attention then MLP, each a residual branch with optional stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.drop_path1 = drop_path_or_identity(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x: (B, N, E) -> (B, N, E)``; ``attn_mask`` as in :meth:`Attention.forward`."""
        x = x + self.drop_path1(self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise every Linear (Xavier-uniform weight, zero bias) and LayerNorm (1, 0) below ``module``.

    Args:
        module: the model (walked recursively).
        generator: random source; ``None`` uses the global RNG.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight, generator=generator)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def init_normal(tensor: torch.Tensor, std: float, generator: torch.Generator | None = None) -> None:
    """``nn.init.normal_(tensor, std=std)`` with zero mean; a meta tensor (no values) is left as it is.

    On the meta device torch runs its Python reference of ``normal_``, whose first call imports the compiler
    stack (about a second in a fresh process); a model built there gets its weights from a state dict anyway.
    """
    if not tensor.is_meta:
        nn.init.normal_(tensor, std=std, generator=generator)


def sincos_position_embedding_3d(grid: tuple[int, int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 3D sine-cosine position embedding of a patch grid (a pure function, never trained).

    Channels are ``[sin x | cos x | sin y | cos y | sin z | cos z]``, each ``F = dim // 6`` wide with
    frequencies ``temperature ** (-f / F)``, ``f = 0 .. F - 1``, applied to integer grid coordinates; the last
    ``dim - 6F`` channels are zero. Rows follow the token order of :mod:`endofed.models.patches` (z fastest).

    Args:
        grid: ``(gx, gy, gz)`` tokens per axis.
        dim: embedding width (>= 6).
        temperature: longest wavelength scale.

    Returns:
        ``(gx * gy * gz, dim)`` float32 on the CPU (also inside a ``torch.device("meta")`` context, so that a
        model built there without weights still has its fixed tables).

    Raises:
        ValueError: if ``dim < 6``.
    """
    freqs = dim // 6
    if freqs < 1:
        raise ValueError(f"sin-cos position embedding needs dim >= 6, got {dim!r}")
    cpu = torch.device("cpu")  # explicit: a real table also when a model is built under a meta device context
    omega = temperature ** (-torch.arange(freqs, dtype=torch.float64, device=cpu) / freqs)  # (F,)
    axes = torch.meshgrid(*(torch.arange(g, dtype=torch.float64, device=cpu) for g in grid), indexing="ij")
    parts = []
    for coord in axes:
        angles = coord.reshape(-1, 1) * omega  # (L, F)
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1)  # (L, 6F)
    return F.pad(table, (0, dim - 6 * freqs)).to(torch.float32)
