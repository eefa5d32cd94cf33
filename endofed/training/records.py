"""Writers and readers of a run's outputs: ``metrics.jsonl``, ``results.json`` and ``predictions.csv``.

JSON is strict (no NaN): an undefined metric (e.g. AUC on one class) is written as ``null``. Predictions
name subject ids: they stay at the site, next to the data they come from.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.errors import EndofedError
from endofed.io.jsonl import JsonlWriter, write_json

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.csv"
PREDICTION_COLUMNS = ("subject_id", "split", "label", "prob")


class ResultsError(EndofedError):
    """A run folder lacks an output file, or its outputs are malformed or do not match another run's."""


def metrics_recorder(
    path: Path, on_epoch: Callable[[dict[str, float]], None] | None = None
) -> Callable[[dict[str, float]], None]:
    """An ``on_epoch`` callback that writes each epoch's metrics to ``path`` (a new JSONL), then calls ``on_epoch``."""
    writer = JsonlWriter(path)

    def record(metrics: dict[str, float]) -> None:
        writer.write(metrics)
        if on_epoch is not None:
            on_epoch(metrics)

    return record


def write_results(path: Path, results: Mapping[str, Any]) -> Path:
    """Write ``results.json`` atomically (strict JSON)."""
    return write_json(Path(path), results, strict=True)


def read_results(run_dir: Path) -> dict[str, Any]:
    """Read ``RUN_DIR/results.json``.

    Raises:
        ResultsError: the folder or file is missing or not a JSON object.
    """
    path = Path(run_dir) / RESULTS_FILE
    if not Path(run_dir).is_dir():
        raise ResultsError(f"run folder {run_dir} not found")
    if not path.is_file():
        raise ResultsError(f"{path} not found: is {run_dir} the output folder of 'endofed finetune'?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Prediction:
    """One patient's predicted probability of class 1.

    Attributes:
        subject_id: site-local patient id.
        split: ``test`` (the held-out test patients; the only split that is predicted and scored).
        label: the true label (0/1).
        prob: predicted P(class 1).
    """

    subject_id: str
    split: str
    label: int
    prob: float


def write_predictions(path: Path, rows: Sequence[Prediction]) -> Path:
    """Write ``predictions.csv`` (one row per patient and split)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for row in rows:
            writer.writerow([row.subject_id, row.split, row.label, repr(float(row.prob))])
    tmp.replace(path)
    return path


def _parse_row(row: Mapping[str, str], where: str) -> Prediction:
    """One CSV row as a :class:`Prediction`; ``ResultsError`` naming the line otherwise."""
    try:
        label, prob = int(row["label"]), float(row["prob"])
    except (TypeError, ValueError):
        raise ResultsError(f"{where}: label must be 0/1 and prob a number, got {row}") from None
    if label not in (0, 1) or not 0.0 <= prob <= 1.0:
        raise ResultsError(f"{where}: label must be 0/1 and prob in [0, 1], got {label!r} and {prob!r}")
    return Prediction(row["subject_id"], row["split"], label, prob)


def read_predictions(run_dir: Path) -> list[Prediction]:
    """Read ``RUN_DIR/predictions.csv``.

    Raises:
        ResultsError: the file is missing, has other columns or a malformed row.
    """
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise ResultsError(f"{path} not found: is {run_dir} the output folder of 'endofed finetune'?")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != PREDICTION_COLUMNS:
            raise ResultsError(f"{path} must have columns {','.join(PREDICTION_COLUMNS)}, got {reader.fieldnames}")
        return [_parse_row(row, f"{path}:{line}") for line, row in enumerate(reader, start=2)]
