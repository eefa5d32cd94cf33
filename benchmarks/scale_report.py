"""Reporting for ``benchmarks/federation_scale.py``: results, table, slope, plot, results.json.

One run's numbers (:class:`Result`), the printed table, the deployment slope, the PNG plot, and
``results.json`` saved and loaded (for ``--before`` and ``--replot``).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

VARIANTS = ("tiny", "echo-vits")
MB = 1e6


@dataclasses.dataclass
class Result:
    """One run's numbers (seconds, bytes); ``error`` says why a run did not finish."""

    variant: str
    sites: int
    rounds: int = 0
    model_bytes: int = 0
    round_s: float = float("nan")
    aggregation_s: float = float("nan")
    server_peak: int = 0
    server_private_peak: int = 0  # RssAnon: the process's own heap (numpy arrays, Python objects); no shared pages
    server_shmem_peak: int = 0  # RssShmem: the pages of shared memory (Ray's object store) the process has touched
    server_file_peak: int = 0  # RssFile: mapped files (the libraries of torch, Ray, Flower)
    superlink_peak: int = 0
    wall_s: float = 0.0
    error: str = ""
    settings: str = ""  # simulation: the send window (max_in_flight) and the object-store bound asked for


def table(results: list[Result]) -> str:
    """The results as a fixed-width table (growth in model sizes from the smallest N of the same variant)."""
    header = ("N", "variant", "model MB", "round s", "aggr s", "aggr s/site", "server RSS MB", "growth models",
              "private MB", "growth models", "shm MB", "files MB", "SuperLink MB", "rounds", "wall s")  # fmt: skip
    lines = [" ".join(f"{h:>13s}" for h in header)]
    for r in results:
        base = min((b for b in results if b.variant == r.variant and b.server_peak), key=lambda b: b.sites, default=r)
        size = max(b.model_bytes for b in results if b.variant == r.variant)  # an aborted run has no record
        growth = (r.server_peak - base.server_peak) / size if size else float("nan")
        private = (r.server_private_peak - base.server_private_peak) / size if size else float("nan")
        cells = (f"{r.sites:13d}", f"{r.variant:>13s}", f"{r.model_bytes / MB:13.1f}", f"{r.round_s:13.2f}",
                 f"{r.aggregation_s:13.3f}", f"{r.aggregation_s / r.sites:13.4f}", f"{r.server_peak / MB:13.0f}",
                 f"{growth:13.1f}", f"{r.server_private_peak / MB:13.0f}", f"{private:13.1f}",
                 f"{r.server_shmem_peak / MB:13.0f}", f"{r.server_file_peak / MB:13.0f}",
                 f"{r.superlink_peak / MB:13.0f}", f"{r.rounds:13d}", f"{r.wall_s:13.0f}")  # fmt: skip
        lines.append(" ".join(cells) + (f"  ERROR: {r.error}" if r.error else ""))
    return "\n".join(lines)


def deployment_slope(results: list[Result]) -> str:
    """Least-squares round time per added site across the deployment runs."""
    done = [r for r in results if r.variant == "deploy-tls" and r.rounds]
    if len(done) < 2:
        return "round time per added site: needs two deployment runs"
    xs = [r.sites for r in done]
    slope = statistics.linear_regression(xs, [r.round_s for r in done]).slope
    return f"deployment: round time per added site {slope:.2f} s (least squares over K = {xs})"


def plot(results: list[Result], path: Path, before: list[Result] | None = None) -> None:
    """Peak ServerApp RSS, median round and aggregation time vs N, one line per variant (dashed: ``before``), log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss_ax, round_ax, agg_ax) = plt.subplots(1, 3, figsize=(15, 4.2))
    before = [r for r in before or [] if r.variant in VARIANTS]
    for style, runs_of, tag in (("o-", results, ""), ("s--", before, " before")):
        for variant in sorted({r.variant for r in runs_of}):
            runs = sorted((r for r in runs_of if r.variant == variant and r.server_peak), key=lambda r: r.sites)
            done, killed = [r for r in runs if not r.error], [r for r in runs if r.error]
            label = f"{variant}{tag} ({max(r.model_bytes for r in runs) / MB:.1f} MB model)" if runs else ""
            color = f"C{VARIANTS.index(variant)}"  # one colour per variant, before and after
            rss_ax.plot([r.sites for r in done], [r.server_peak / MB for r in done], style, color=color, label=label)
            for ax, seconds in ((round_ax, [r.round_s for r in done]), (agg_ax, [r.aggregation_s for r in done])):
                ax.plot([r.sites for r in done], seconds, style, color=color, label=variant + tag)
            if killed:  # the RSS at which --rss-limit-gb ended the run: a lower bound of its peak
                rss_ax.plot([r.sites for r in killed], [r.server_peak / MB for r in killed], "rx", ms=10)
    rss_ax.set(xscale="log", xlabel="sites N", ylabel="peak ServerApp RSS (MB)", title="Peak RSS (x: killed at limit)")
    round_ax.set(xscale="log", yscale="log", xlabel="sites N", ylabel="median round (s)", title="Round time")
    agg_ax.set(xscale="log", yscale="log", xlabel="sites N", ylabel="median aggregation (s)", title="Aggregation time")
    for ax in (rss_ax, round_ax, agg_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def load_results(path: Path) -> list[Result]:
    """Results saved by :func:`save` (e.g. an earlier sweep, for ``--before``)."""
    fields = {f.name for f in dataclasses.fields(Result)}
    return [Result(**{k: v for k, v in item.items() if k in fields}) for item in json.loads(path.read_text())]


def save(results: list[Result], out: Path) -> None:
    """``OUT/results.json`` (rewritten after every run, so a crash keeps what was measured)."""
    (out / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
