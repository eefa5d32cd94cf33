"""Turn the site's ``device`` setting into a :class:`torch.device` (the one place that chooses a device).

On the CPU it also fixes torch's thread count. torch's default (one thread per core) breaks down when
processes share a machine: on a 2-core machine with other work running, one MIM epoch took 29-40 s with
2 threads against 3 s with 1 (``benchmarks/cpu_threads.py``). The automatic choice is
``ENDOFED_CPU_THREADS`` when set (the simulation launcher sets it to each site's CPU share), else half the
usable cores, at least one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from endofed.config import THREADS_ENV
from endofed.errors import ConfigError
from endofed.site_config import usable_cores


def cpu_threads(requested: int, cores: int, env: Mapping[str, str]) -> int:
    """Torch threads for a CPU run: ``requested`` when > 0, else ``env[ENDOFED_CPU_THREADS]``, else ``cores // 2``.

    Args:
        requested: ``SiteConfig.cpu_threads`` (0 = automatic).
        cores: usable cores of this machine.
        env: the process environment.

    Raises:
        ConfigError: ``ENDOFED_CPU_THREADS`` is set but is not a positive integer.
    """
    if requested > 0:
        return requested
    text = env.get(THREADS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {text!r}")
        return int(text)
    return max(1, cores // 2)


def sole_job_threads(requested: int, cores: int, env: Mapping[str, str]) -> int:
    """Torch threads for a process that runs one job at a time on the whole machine (``endofed compare``'s units).

    ``requested`` (``SiteConfig.cpu_threads``) or ``ENDOFED_CPU_THREADS`` when set, else every usable core: with
    nothing else running, 2 threads took 0.62-0.73 of the time of 1 on this 2-core machine
    (``benchmarks/cpu_threads.py``).
    """
    if requested > 0 or env.get(THREADS_ENV, "").strip():
        return cpu_threads(requested, cores, env)
    return max(1, cores)


def resolve_device(name: str, threads: int = 0) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cpu``; ``cuda`` / ``cuda:N`` only when that GPU exists.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``SiteConfig.device``).
        threads: ``SiteConfig.cpu_threads``: torch threads when the device is the CPU (0 = automatic,
            see :func:`cpu_threads`).

    Returns:
        The device.

    Raises:
        ConfigError: (a ``ValueError``) on an unknown name, or a CUDA device that this machine does not have.
    """
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        torch.set_num_threads(cpu_threads(threads, usable_cores(), os.environ))
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda")
    index_text = name[5:] if name.startswith("cuda:") else None
    if name != "cuda" and not (index_text is not None and index_text.isdigit()):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    count = torch.cuda.device_count()
    if index_text is not None and int(index_text) >= count:
        raise ConfigError(f"device {name!r} requested but this machine has {count} CUDA device(s)")
    return torch.device(name)
