"""``endofed data ...``: check a site's data, convert DICOM to NIfTI, write an example site."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from endofed.cli.common import EXIT_FAILED, EXIT_OK, add_config_args, console
from endofed.config import load_config, load_site_config
from endofed.errors import DataError

if TYPE_CHECKING:
    from endofed.data.dicom import SeriesResult

# The data libraries (nibabel, pydicom, matplotlib, MONAI through the check) are imported by the handlers that
# use them, so that building the parser and printing --help stay fast (tests/test_imports.py).

PREVIEW_CASES = 6


def register(commands: Any) -> None:
    """Add the ``data`` command group."""
    group = commands.add_parser("data", help="site data tools", description="Site data tools.")
    sub = group.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = sub.add_parser(
        "check",
        help="validate every case, fill the cache and print the data passport",
        description=(
            "Validate every case of a site (files readable, 3D, finite, T1/T2 overlap in world coordinates), "
            "preprocess it into the site's cache, and print and write the data passport: aggregate numbers "
            "only, no paths and no subject ids, so it can be shown to the coordinator. Exit 0 if training "
            "can proceed."
        ),
    )
    check.add_argument("--site", required=True, metavar="YAML", help="site config (see configs/sites/)")
    add_config_args(check)
    check.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if some cases fail (they are left out)"
    )
    check.add_argument(
        "--preview",
        metavar="PNG",
        nargs="?",
        const="",
        help="also draw T1/T2 of up to 6 usable cases into a PNG (default WORK_DIR/preview.png); local only",
    )
    check.add_argument(
        "--passport", metavar="JSON", help="where to write the passport (default: WORK_DIR/passport.json)"
    )
    check.set_defaults(handler=run_check)

    convert = sub.add_parser(
        "convert",
        help="convert a folder of DICOM series to NIfTI",
        description=(
            "Convert every DICOM series under DICOM_DIR into OUT_DIR/<series description>.nii.gz. "
            "A series with a missing slice is refused, never written as a wrong volume; one that repeats its "
            "slice positions (e.g. two echoes) becomes one file per echo, acquisition or time point. "
            "Non-DICOM files are skipped and counted. "
            "DICOM_DIR is only read; existing files in OUT_DIR are never overwritten."
        ),
    )
    convert.add_argument("dicom_dir", type=Path, metavar="DICOM_DIR")
    convert.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    convert.set_defaults(handler=run_convert)

    example = sub.add_parser(
        "example",
        help="write a small generated example site (simple ellipsoids, not the benchmark)",
        description="Write a small example site (T1/T2 NIfTI on different grids, manifest.csv, site.yaml).",
    )
    example.add_argument("--out", required=True, type=Path, metavar="DIR", help="destination folder")
    example.add_argument("--subjects", type=int, default=12, help="number of subjects (default 12)")
    example.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    example.add_argument("--in-plane", type=float, default=0.6, help="T2 in-plane spacing in mm (default 0.6)")
    example.set_defaults(handler=run_example)


def _progress() -> Progress:
    """A progress bar on stderr."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _span(summary: dict[str, Any], key: str, fmt: str) -> str:
    """``min..max`` of a per-axis range, each vector formatted as ``a x b x c``."""

    def vec(values: list[float]) -> str:
        return " x ".join(format(v, fmt) for v in values)

    low, high = summary[key]["min"], summary[key]["max"]
    return vec(low) if low == high else f"{vec(low)} .. {vec(high)}"


def _counts(counter: dict[str, int]) -> str:
    """``{"LAS": 3, "PSR": 1}`` -> ``"LAS 3, PSR 1"``."""
    return ", ".join(f"{k} {v}" for k, v in counter.items())


def passport_tables(passport: dict[str, Any]) -> tuple[Table, Table]:
    """Human-readable rendering of the passport: a summary table and a per-modality table."""
    cases = passport["cases"]
    summary = Table(title=f"Data passport: site {passport['site_id']}", show_header=False)
    summary.add_column("item", style="bold")
    summary.add_column("value")
    summary.add_row("cases", f"{cases['total']} total, {cases['usable']} usable, {cases['failed']} failed")
    balance = f"{cases['positive']} positive / {cases['negative']} negative"
    summary.add_row("labels", f"{cases['labelled']} labelled ({balance}), {cases['unlabelled']} unlabelled")
    if passport["t1_t2_overlap"] is not None:
        overlap = passport["t1_t2_overlap"]
        summary.add_row("T1/T2 overlap", f"min {overlap['min']:.0%}, median {overlap['median']:.0%} of the T2 region")
    duplicates = (f"{passport['duplicates']} identical files, {passport['content_duplicates']} with the same "
                  f"voxels, {passport['near_duplicates']} look alike")  # fmt: skip
    summary.add_row("duplicates", duplicates)
    summary.add_row("failures", _counts(passport["failures"]) or "none")
    summary.add_row("ready to train", "yes" if passport["ready"] else "NO")
    modalities = Table(title="Source images (usable cases)")
    modalities.add_column("")
    rows: dict[str, list[str]] = {
        k: []
        for k in ("present", "missing", "orientations", "dtypes", "spacing mm", "shape", "FOV mm", "p1 / p50 / p99")
    }
    for name, item in passport["modalities"].items():
        modalities.add_column(name.upper())
        present = bool(item["present"])
        pct = item.get("intensity_percentiles_median", {})
        values = [
            str(item["present"]),
            str(item["missing"]),
            _counts(item["orientations"]) if present else "",
            _counts(item["dtypes"]) if present else "",
            _span(item, "spacing_mm", ".2f") if present else "",
            _span(item, "shape", ".0f") if present else "",
            _span(item, "fov_mm", ".0f") if present else "",
            f"{pct['p1']:.0f} / {pct['p50']:.0f} / {pct['p99']:.0f}" if present else "",
        ]
        for row, value in zip(rows.values(), values, strict=True):
            row.append(value)
    for label, row in rows.items():
        modalities.add_row(label, *row)
    return summary, modalities


def run_check(args: argparse.Namespace) -> int:
    """``endofed data check``: always the full check (every source file hashed again)."""
    from endofed.data.check import check_site, site_cache
    from endofed.data.preview import write_preview
    from endofed.io.figures import figure_format

    site = load_site_config(args.site)
    cfg = load_config(args.config, args.overrides)
    preview = None if args.preview is None else Path(args.preview) if args.preview else site.work_dir / "preview.png"
    if preview is not None:
        figure_format(preview)  # refuse e.g. --preview out.csv before the check runs
    with _progress() as progress:
        task = progress.add_task("preprocessing", total=None)
        check = check_site(
            site,
            cfg.data,
            allow_failures=args.allow_failures,
            full=True,
            passport_path=Path(args.passport) if args.passport else None,
            on_start=lambda cases: progress.update(task, total=len(cases)),
            on_case=lambda _: progress.advance(task),
            outputs=[] if preview is None else [("preview", preview)],
        )
    for table in passport_tables(check.passport):
        console.print(table)
    failed = [r for r in check.results if not r.ok]
    if failed:
        console.print(f"[bold]Failed cases[/bold] (local details, not in the passport): {len(failed)}")
        for result in failed:
            console.print(f"  {result.case.subject_id}: {result.error}", markup=False)
    similar = [r for r in check.results if r.near_duplicate is not None]
    if similar:
        console.print(f"[bold]Possible duplicates[/bold] (usable; check them, local details): {len(similar)}")
        for result in similar:
            console.print(f"  {result.case.subject_id}: {result.near_duplicate}", markup=False)
    console.print(f"passport written to {check.passport_path}", markup=False)
    if preview is not None:
        usable = [r for r in check.results if r.ok][:PREVIEW_CASES]
        if usable:
            cache = site_cache(site)
            rows = [(r.case.subject_id, cache.get(r.key).image) for r in usable if r.key is not None]
            write_preview(rows, cfg.data.target_spacing, preview)
            console.print(f"preview written to {preview} (shows images: keep it at the site)", markup=False)
    return EXIT_OK if check.passport["ready"] else EXIT_FAILED


def _report_series(result: SeriesResult) -> None:
    """Print one converted (or refused) volume."""
    files = f"{result.n_files} file{'' if result.n_files == 1 else 's'}"
    files += f", {result.duplicates} duplicate(s) dropped" if result.duplicates else ""
    if result.error is None:
        console.print(f"  ok    {result.description!r} ({files}) -> {result.output}", markup=False)
    else:
        console.print(f"  FAIL  {result.description!r} ({files}): {result.error}", markup=False)


def run_convert(args: argparse.Namespace) -> int:
    """``endofed data convert``: the summary, then one error line (exit 1) if anything was refused."""
    from endofed.data.dicom import convert_directory
    from endofed.data.guard import collect_sources, refuse_source_writes

    refuse_source_writes([("OUT_DIR", args.out_dir)], collect_sources((), folders=(args.dicom_dir,)))
    report = convert_directory(args.dicom_dir, args.out_dir, on_series=_report_series)
    console.print(report.summary(), markup=False)
    failure = report.failure_line()
    if failure is not None:
        raise DataError(failure, "dicom_invalid")
    return EXIT_OK


def run_example(args: argparse.Namespace) -> int:
    """``endofed data example``."""
    from endofed.synth.example import write_example_site

    if args.subjects < 1:
        raise DataError(f"--subjects must be >= 1, got {args.subjects}")
    if (args.out / "site.yaml").exists():
        raise DataError(f"an example site already exists in {args.out} (choose another --out)")
    site_yaml = write_example_site(args.out, n_subjects=args.subjects, seed=args.seed, in_plane_mm=args.in_plane)
    print(site_yaml, file=sys.stdout)
    return EXIT_OK
