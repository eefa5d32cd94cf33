"""Lay out the instrumented Flower app (:mod:`tests.instrumented_client`) as an app folder of its own.

It holds copies of what the shipped bundle holds (``server/``, ``client/``, ``endofed/``, the configs) and a
``pyproject.toml`` whose ClientApp is the instrumented one, so ``endofed-server`` (``app_dir`` in its YAML) or
``flwr run`` ship it to test SuperNodes while the repository's own bundle never contains it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT_MODULE = "instrumented_client"


def instrumented_pyproject(text: str) -> str:
    """The repository's ``pyproject.toml`` with the instrumented ClientApp, its file in the bundle, the echo keys."""
    out, count = re.subn(r'^clientapp = ".*"$', f'clientapp = "{CLIENT_MODULE}:app"', text, flags=re.M)
    out, included = re.subn(r"^fab-include = \[", f'fab-include = [\n    "/{CLIENT_MODULE}.py",', out, flags=re.M)
    echo_keys = "[tool.flwr.app.config]\necho = false\necho-busy-s = 0.0"
    out, configured = re.subn(r"^\[tool\.flwr\.app\.config\]$", echo_keys, out, flags=re.M)
    if (count, included, configured) != (1, 1, 1):
        raise ValueError("pyproject.toml no longer has one clientapp, fab-include and [tool.flwr.app.config]")
    return out


def build_instrumented_app(dest: Path) -> Path:
    """Write the instrumented app folder into ``dest`` (created or replaced); returns it."""
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("server", "client", "endofed", "configs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    for name in ("README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copy2(Path(__file__).with_name(f"{CLIENT_MODULE}.py"), dest / f"{CLIENT_MODULE}.py")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (dest / "pyproject.toml").write_text(instrumented_pyproject(pyproject), encoding="utf-8")
    return dest
