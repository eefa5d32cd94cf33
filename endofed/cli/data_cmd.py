"""``endofed data ...``: check a site's data, convert DICOM to NIfTI, write an example site."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from endofed.cli.common import EXIT_FAILED, EXIT_OK, add_config_args, console
from endofed.config import load_config, load_site_config
from endofed.data.check import check_site
from endofed.data.dicom import SeriesResult, convert_directory
from endofed.data.example import write_example_site
from endofed.errors import DataError


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
        "--passport", metavar="JSON", help="where to write the passport (default: WORK_DIR/passport.json)"
    )
    check.set_defaults(handler=run_check)

    convert = sub.add_parser(
        "convert",
        help="convert a folder of DICOM series to NIfTI",
        description=(
            "Convert every DICOM series under DICOM_DIR into OUT_DIR/<series description>.nii.gz. "
            "A series with a missing slice is refused, never written as a wrong volume. "
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


def passport_table(passport: dict[str, Any]) -> Table:
    """Human-readable rendering of the main passport numbers."""
    cases = passport["cases"]
    table = Table(title=f"Data passport: site {passport['site_id']}", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("cases", f"{cases['total']} total, {cases['usable']} usable, {cases['failed']} failed")
    balance = f"{cases['positive']} positive / {cases['negative']} negative"
    table.add_row("labels", f"{cases['labelled']} labelled ({balance}), {cases['unlabelled']} unlabelled")
    for name, summary in passport["modalities"].items():
        line = f"present {summary['present']}, missing {summary['missing']}"
        if summary["present"]:
            spacing = summary["spacing_mm"]
            line += (
                f"; orientations {summary['orientations']}; dtypes {summary['dtypes']}"
                f"; spacing mm {spacing['min']}..{spacing['max']}"
                f"; shape {summary['shape']['min']}..{summary['shape']['max']}"
                f"; FOV mm {summary['fov_mm']['min']}..{summary['fov_mm']['max']}"
            )
        table.add_row(name.upper(), line)
    if passport["t1_t2_overlap"] is not None:
        overlap = passport["t1_t2_overlap"]
        table.add_row("T1/T2 overlap", f"min {overlap['min']:.0%}, median {overlap['median']:.0%}")
    table.add_row("duplicates", str(passport["duplicates"]))
    table.add_row("failures", ", ".join(f"{k}: {v}" for k, v in passport["failures"].items()) or "none")
    table.add_row("ready to train", "yes" if passport["ready"] else "NO")
    return table


def run_check(args: argparse.Namespace) -> int:
    """``endofed data check``."""
    site = load_site_config(args.site)
    cfg = load_config(args.config, args.overrides)
    with _progress() as progress:
        task = progress.add_task("preprocessing", total=None)
        check = check_site(
            site,
            cfg.data,
            allow_failures=args.allow_failures,
            passport_path=Path(args.passport) if args.passport else None,
            on_start=lambda cases: progress.update(task, total=len(cases)),
            on_case=lambda _: progress.advance(task),
        )
    console.print(passport_table(check.passport))
    failed = [r for r in check.results if not r.ok]
    if failed:
        console.print(f"[bold]Failed cases[/bold] (local details, not in the passport): {len(failed)}")
        for result in failed:
            console.print(f"  {result.case.subject_id}: {result.error}", markup=False)
    console.print(f"passport written to {check.passport_path}", markup=False)
    return EXIT_OK if check.passport["ready"] else EXIT_FAILED


def _report_series(result: SeriesResult) -> None:
    """Print one converted (or refused) series."""
    if result.error is None:
        console.print(f"  ok    {result.description!r} ({result.n_files} files) -> {result.output}", markup=False)
    else:
        console.print(f"  FAIL  {result.description!r} ({result.n_files} files): {result.error}", markup=False)


def run_convert(args: argparse.Namespace) -> int:
    """``endofed data convert``."""
    if args.out_dir.resolve() == args.dicom_dir.resolve():
        raise DataError(f"OUT_DIR must differ from DICOM_DIR (source data is read-only): {args.out_dir}")
    results = convert_directory(args.dicom_dir, args.out_dir, on_series=_report_series)
    failed = [r for r in results if r.error is not None]
    console.print(f"{len(results) - len(failed)} series converted, {len(failed)} refused")
    return EXIT_FAILED if failed else EXIT_OK


def run_example(args: argparse.Namespace) -> int:
    """``endofed data example``."""
    if args.subjects < 1:
        raise DataError(f"--subjects must be >= 1, got {args.subjects}")
    if (args.out / "site.yaml").exists():
        raise DataError(f"an example site already exists in {args.out} (choose another --out)")
    site_yaml = write_example_site(args.out, n_subjects=args.subjects, seed=args.seed, in_plane_mm=args.in_plane)
    print(site_yaml, file=sys.stdout)
    return EXIT_OK
