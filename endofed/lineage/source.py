"""Where the code of a run came from: ``git describe`` of the checkout the launcher ran in (no flwr import).

The ServerApp runs from the installed app bundle, which has no ``.git``; the launchers (``endofed-sim``,
``endofed-server``) run in the checkout, describe it and pass the result in the run config
(:data:`endofed.federated.runconfig.SOURCE_DESCRIBE`), and the model cards record it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_describe(folder: Path) -> str | None:
    """``git describe --always --dirty=+dirty`` of the checkout holding ``folder``; ``None`` outside one."""
    try:
        result = subprocess.run(  # noqa: S603
            ["git", "-C", str(folder), "describe", "--always", "--dirty=+dirty"],  # noqa: S607
            capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
