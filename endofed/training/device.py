"""Turn the site's ``device`` setting into a :class:`torch.device` (the one place that chooses a device)."""

from __future__ import annotations

import torch

from endofed.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cpu``; ``cuda`` / ``cuda:N`` only when that GPU exists.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``SiteConfig.device``).

    Returns:
        The device.

    Raises:
        ConfigError: (a ``ValueError``) on an unknown name, or a CUDA device that this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    index_text = name[5:] if name.startswith("cuda:") else None
    if name != "cuda" and not (index_text is not None and index_text.isdigit()):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    count = torch.cuda.device_count()
    if index_text is not None and int(index_text) >= count:
        raise ConfigError(f"device {name!r} requested but this machine has {count} CUDA device(s)")
    return torch.device(name)
