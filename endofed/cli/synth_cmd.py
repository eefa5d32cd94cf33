"""``endofed synth``: render the synthetic multi-site pelvic MRI benchmark into NIfTI site folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from endofed.cli.common import EXIT_OK, console
from endofed.config import to_dict
from endofed.errors import ConfigError
from endofed.synth.profile import SCALES, load_preset, load_profile, preset_names


def register(commands: Any) -> None:
    """Add the ``synth`` command."""
    parser = commands.add_parser(
        "synth",
        help="generate the synthetic multi-site pelvic MRI benchmark",
        description=(
            "Render a procedural female-pelvis phantom (anatomy, endometriosis signs and mimics, contrast from "
            "tissue T1/T2/PD and each site's sequences) into NIfTI files, one folder and one site YAML per "
            "site, ready for 'endofed data check'. Ground-truth finding maps go to <site>/truth/ (never read "
            "by training). Per sequence, a profile can also vary scans per subject: oblique_deg (slices tilted "
            "by up to this many degrees, in the NIfTI affine) and ghosting_rate (share of subjects whose scan "
            "shows the ghost); every key is described in endofed/synth/profile.py. "
            f"Built-in presets: {', '.join(preset_names())}."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--profile", type=Path, metavar="YAML", help="site profile file (see endofed/synth/presets)")
    source.add_argument("--preset", metavar="NAME", help=f"built-in profile: {', '.join(preset_names())}")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (must not hold sites)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed = same files")
    parser.add_argument(
        "--scale", choices=SCALES, default="tiny", help="tiny: coarse in-plane voxels for CPU (default); full: clinical"
    )
    parser.set_defaults(handler=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Generate every site of the profile and print the site YAML paths."""
    from endofed.synth.cohort import generate

    sites = load_preset(args.preset) if args.preset else load_profile(args.profile)
    existing = [p for p in (args.out / f"site_{s.name}.yaml" for s in sites) if p.exists()]
    existing += [args.out / s.name for s in sites if (args.out / s.name).exists()]
    if existing:
        raise ConfigError(f"output already exists (not overwriting): {existing[0]}")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"seed": args.seed, "scale": args.scale, "sites": [to_dict(s) for s in sites]}
    (args.out / "profile_used.yaml").write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    total = sum(s.cohort.subjects + s.cohort.test_subjects for s in sites)  # test patients are rendered too
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, transient=True) as progress:  # fmt: skip
        task = progress.add_task("rendering subjects", total=total)
        paths = generate(sites, args.out, args.scale, args.seed, on_subject=lambda _: progress.advance(task))
    for path in paths:
        print(path, file=sys.stdout)
    console.print(f"{total} subjects in {len(paths)} sites written to {args.out}", markup=False)
    return EXIT_OK
