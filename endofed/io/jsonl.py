"""Strict JSON and JSON-lines writers for run outputs (round logs, summaries, metrics), pure and light.

JSON is strict (no NaN): an undefined metric (e.g. AUC on one class) is written as ``null``. Writes of whole
files are atomic (a uniquely named temporary file in the same folder, then a rename), so a reader never sees
half a file and two processes writing the same file do not collide on the temporary name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from endofed.io.files import write_text_atomic


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` and tuples by lists (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: Any, *, strict: bool = False) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically; returns ``path``.

    A uniquely named temporary file (created exclusively) in the same folder, then ``os.replace``: two processes
    may write the same file at once (the last rename wins, whole). ``strict``: non-finite floats become ``null``
    (:func:`json_safe`) and NaN is refused, so the file is standard JSON.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json_safe(payload) if strict else payload
    text = json.dumps(data, indent=2, allow_nan=not strict) + "\n"
    return write_text_atomic(path, text)


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to ``path`` (created with its folder if missing; non-finite floats become ``null``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


class JsonlWriter:
    """Append one JSON object per line to a file (truncated when the writer is created, unless ``append``)."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append or not self.path.exists():
            self.path.write_text("", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (non-finite floats become ``null``) and flush it to disk."""
        append_jsonl(self.path, record)
