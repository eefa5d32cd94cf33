"""TensorBoard event files of a run: the server's round records and a site's epochs, as scalars.

What is written (``tensorboard --logdir`` on either folder shows it):

* the server, next to ``rounds.jsonl``: ``<run>/tensorboard/global/`` (per round: the sites' loss weighted by
  ``num-examples``, bytes down/up summed over the sites, round and aggregation seconds, aggregated, rejected,
  failures; test metrics; DP epsilon) and ``<run>/tensorboard/<site>/`` (each site's values as the server saw
  them), so TensorBoard draws every site's curve over the global one on the same chart. Step = round.
* a site, in its own work dir: ``<work_dir>/federation/<run key>/tensorboard/`` (loss, lr, seconds per local
  epoch). Step = the epoch's index in the phase's schedule (rounds x local epochs).

Tags are ``<phase>/<name>`` (train), ``<phase>-eval/<metric>`` (test metrics) and ``<phase>-privacy/<name>``.
The mapping from a record to scalars is pure (:func:`round_scalars`, :func:`epoch_scalars`); the writers are
thin, flush once per round (no images, no histograms) and import TensorBoard only when they first write. A
site or server whose TensorBoard package is missing, or whose folder cannot be written, logs one warning and
trains on: these files are a view of the run, never part of its results.
"""

from __future__ import annotations

import atexit
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from endofed.federated.protocol import EVALUATION_METRICS
from endofed.io.jsonl import JsonlWriter

LOGGER = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # under a run's output dir (server) or a site's federation/<run key>/ folder
GLOBAL_RUN = "global"  # the server's run (TensorBoard's word) of global scalars
# Site reply metrics drawn per site, under these names (the rest of a reply's metrics are ids or bookkeeping)
SITE_TRAIN_KEYS = {
    "train-loss": "loss",
    "num-examples": "num_examples",
    "bytes_down": "bytes_down",
    "bytes_up": "bytes_up",
    "update_norm_ratio": "update_norm_ratio",
    "train-seconds": "train_seconds",
    "t-startup": "t-startup",
    "t-local": "t-local",
}
EPOCH_KEYS = ("loss", "lr", "accuracy", "seconds", "volumes_per_s")  # per local epoch, where present
PRIVACY_KEYS = ("epsilon", "released", "clipped_sites", "sites_averaged", "sites_asked")


class Scalar(NamedTuple):
    """One point of one TensorBoard chart: ``run`` ('' = the log folder itself), ``tag``, ``value``, ``step``."""

    run: str
    tag: str
    value: float
    step: int


# --------------------------------------------------------------------------------------------------
# Pure: records -> scalars
# --------------------------------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """``value`` as a finite float (``True`` -> 1.0), or ``None`` for anything else (None, NaN, text, lists)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def site_run(site: Mapping[str, Any]) -> str:
    """The run name of one site in a round record: ``site-<partition-id>`` (simulation) or ``node-<node id>``."""
    partition = number(site.get("partition-id"))
    return f"site-{int(partition)}" if partition is not None else f"node-{site.get('node')}"


def weighted_mean(sites: Sequence[Mapping[str, Any]], key: str, weight: str = "num-examples") -> float | None:
    """Mean of ``key`` over the sites that report it finitely, weighted by ``weight`` (1 where it is missing).

    ``None`` when no site has the value or the weights sum to 0.
    """
    pairs = [(number(s.get(key)), number(s.get(weight, 1.0))) for s in sites]
    kept = [(v, 1.0 if w is None else w) for v, w in pairs if v is not None]
    total = sum(w for _, w in kept)
    return sum(v * w for v, w in kept) / total if kept and total > 0 else None


def total(sites: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Sum of ``key`` over the sites that report it finitely (``None`` when none does)."""
    values = [v for s in sites if (v := number(s.get(key))) is not None]
    return sum(values) if values else None


def _points(run: str, prefix: str, values: Mapping[str, Any], step: int) -> list[Scalar]:
    """``Scalar(run, prefix/name, value, step)`` for every finite number among ``values``."""
    return [Scalar(run, f"{prefix}/{name}", v, step) for name, raw in values.items() if (v := number(raw)) is not None]


def _train_scalars(record: Mapping[str, Any], phase: str, step: int) -> list[Scalar]:
    sites = list(record.get("sites") or [])
    totals = {key: total(sites, key) for key in ("bytes_down", "bytes_up")}
    rejected = record.get("rejected")
    overall = {
        "loss": weighted_mean(sites, "train-loss"),
        "sites": len(sites),
        **totals,
        "round_seconds": record.get("round_seconds"),
        "aggregation_seconds": record.get("aggregation_seconds"),
        "aggregated": record.get("aggregated"),
        "rejected": len(rejected) if isinstance(rejected, list) else None,
        "failures": record.get("failures"),
    }
    scalars = _points(GLOBAL_RUN, phase, overall, step)
    for site in sites:
        named = {name: site.get(key) for key, name in SITE_TRAIN_KEYS.items()}
        scalars += _points(site_run(site), phase, named, step)
    return scalars


def _evaluate_scalars(record: Mapping[str, Any], phase: str, step: int) -> list[Scalar]:
    sites = list(record.get("sites") or [])
    metrics = [key for key in EVALUATION_METRICS if any(key in s for s in sites)]
    prefix = f"{phase}-eval"
    scalars = _points(GLOBAL_RUN, prefix, {key: weighted_mean(sites, key) for key in metrics}, step)
    scalars += _points(GLOBAL_RUN, prefix, {"failures": record.get("failures")}, step)
    for site in sites:
        scalars += _points(site_run(site), prefix, {key: site.get(key) for key in metrics}, step)
    return scalars


def round_scalars(record: Mapping[str, Any]) -> list[Scalar]:
    """The TensorBoard scalars of one server round record (``train``, ``evaluate`` or ``privacy``; else none).

    Step = the record's round. Global values go to run ``global``, each site's to its :func:`site_run`;
    non-finite or missing values are left out (an undefined AUC is no point, not a zero).
    """
    phase, step = record.get("phase"), number(record.get("round"))
    if not isinstance(phase, str) or step is None:
        return []
    event = record.get("event")
    if event == "train":
        return _train_scalars(record, phase, int(step))
    if event == "evaluate":
        return _evaluate_scalars(record, phase, int(step))
    if event == "privacy":
        return _points(GLOBAL_RUN, f"{phase}-privacy", {key: record.get(key) for key in PRIVACY_KEYS}, int(step))
    return []


def epoch_scalars(phase: str, metrics: Mapping[str, Any]) -> list[Scalar]:
    """A site's scalars of one local epoch (``metrics`` of the training loop, with its global ``epoch`` index).

    Tags ``<phase>/loss``, ``<phase>/lr``, ... (:data:`EPOCH_KEYS`), in the log folder itself (run '').

    Raises:
        ValueError: ``metrics`` has no ``epoch`` index.
    """
    epoch = number(metrics.get("epoch"))
    if epoch is None:
        raise ValueError(f"epoch metrics need an 'epoch' index, got keys {sorted(metrics)}")
    return _points("", phase, {key: metrics[key] for key in EPOCH_KEYS if key in metrics}, int(epoch))


# --------------------------------------------------------------------------------------------------
# Writers (TensorBoard imported on first write)
# --------------------------------------------------------------------------------------------------


class ScalarWriter:
    """Scalars into TensorBoard event files under ``logdir`` (one sub-folder per run name, '' = ``logdir``).

    Opens a ``SummaryWriter`` per run on its first scalar. If TensorBoard cannot be imported or the folder
    cannot be written, it warns once and drops every later scalar.
    """

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self._writers: dict[str, Any] = {}
        self._broken = False

    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            from torch.utils.tensorboard import SummaryWriter  # ~0.2 s on first use; only where scalars are written

            self._writers[run] = SummaryWriter(str(self.logdir / run if run else self.logdir))
        return self._writers[run]

    def add(self, scalars: Iterable[Scalar], walltime: float | None = None) -> None:
        """Queue ``scalars`` (at ``walltime``, Unix seconds; default now)."""
        if self._broken:
            return
        stamp = time.time() if walltime is None else walltime
        try:
            for point in scalars:
                self._writer(point.run).add_scalar(point.tag, point.value, point.step, walltime=stamp)
        except (ImportError, OSError) as exc:
            self._broken = True
            LOGGER.warning("TensorBoard logging to %s is off for this process: %s", self.logdir, exc)

    def flush(self) -> None:
        """Write everything queued to disk."""
        try:
            for writer in self._writers.values():
                writer.flush()
        except OSError as exc:
            self._broken = True
            LOGGER.warning("TensorBoard logging to %s is off for this process: %s", self.logdir, exc)

    def close(self) -> None:
        """Flush and close every event file (the writer can be used again; it opens new files)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class TensorBoardRoundWriter(JsonlWriter):
    """The server's round log: each record to ``rounds.jsonl`` (as :class:`JsonlWriter`), then to TensorBoard.

    The event files are flushed after every record, so a live run shows each round as it lands.
    """

    def __init__(self, path: Path, logdir: Path, append: bool = False) -> None:
        super().__init__(path, append=append)
        self.scalars = ScalarWriter(logdir)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` to the JSONL file, then write its scalars (:func:`round_scalars`) and flush."""
        super().write(record)
        points = round_scalars(record)
        if points:
            self.scalars.add(points, walltime=number(record.get("time")))
            self.scalars.flush()

    def close(self) -> None:
        """Close the event files."""
        self.scalars.close()


def round_writer(path: Path, append: bool = False, tensorboard: Path | None = None) -> JsonlWriter:
    """The writer of a server's round log: JSONL only, or JSONL teed into TensorBoard under ``tensorboard``."""
    if tensorboard is None:
        return JsonlWriter(path, append=append)
    return TensorBoardRoundWriter(path, tensorboard, append=append)


_EPOCH_WRITERS: dict[Path, ScalarWriter] = {}  # one event file per folder and process, closed at exit


def _close_epoch_writers() -> None:
    for writer in _EPOCH_WRITERS.values():
        writer.close()
    _EPOCH_WRITERS.clear()


atexit.register(_close_epoch_writers)


def write_epochs(logdir: Path, phase: str, history: Iterable[Mapping[str, Any]]) -> None:
    """Write the :func:`epoch_scalars` of every epoch in ``history`` under ``logdir``, flushed.

    A process that trains many rounds (a simulated site) keeps one event file per folder: TensorBoard reads a
    folder's files in name order, and its names end in a per-process counter that does not sort past 9
    (``...pid.9`` after ``...pid.10``), so one file per round would have later rounds read first and dropped.
    """
    key = Path(logdir).resolve()
    writer = _EPOCH_WRITERS.get(key)
    if writer is None:
        writer = _EPOCH_WRITERS[key] = ScalarWriter(key)
    for metrics in history:
        writer.add(epoch_scalars(phase, metrics))
    writer.flush()


@contextmanager
def epoch_logger(logdir: Path | None, phase: str) -> Iterator[Callable[[dict[str, float]], None] | None]:
    """An ``on_epoch`` callback writing :func:`epoch_scalars` under ``logdir`` (``None``: no callback).

    Flushes after each epoch and closes its event file on exit (a simulated site's process trains many rounds).
    """
    if logdir is None:
        yield None
        return
    writer = ScalarWriter(logdir)

    def on_epoch(metrics: dict[str, float]) -> None:
        writer.add(epoch_scalars(phase, metrics))
        writer.flush()

    try:
        yield on_epoch
    finally:
        writer.close()
