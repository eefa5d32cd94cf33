"""Figures of the synthetic benchmark at full (clinical) scale, for docs/: what the data looks like.

Writes three PNGs:
  docs/synth_positive.png  an endometrioma (T1 bright, T2 dark with shading), T2 and T1 through the lesion
  docs/synth_mimic.png     a haemorrhagic cyst (T1 bright like an endometrioma, but T2 bright: no shading)
  docs/synth_sites.png     one subject per demo3 site: T2 and T1 mid-slices in each site's own planes

Each image is shown in its own acquisition plane, in scanner units, with the lesion centre marked.
Usage: python benchmarks/synth_figures.py [--out docs] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from endofed.io.figures import save_figure  # noqa: E402
from endofed.synth.anatomy import F  # noqa: E402
from endofed.synth.cohort import SubjectSpec, draw_subject, render_subject  # noqa: E402
from endofed.synth.profile import SiteProfile, load_preset  # noqa: E402
from endofed.synth.render import Acquisition  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def find_subject(site: SiteProfile, wanted: F, avoid: tuple[F, ...], seed: int) -> tuple[SubjectSpec, int]:
    """The first subject (by index) of a site whose findings include ``wanted`` and none of ``avoid``."""
    for index in range(10_000):
        spec = draw_subject(np.random.default_rng([seed, 0, index]), site.cohort, f"{site.name}-{index + 1:04d}")
        if wanted in spec.findings and not set(avoid) & set(spec.findings):
            return spec, index
    raise RuntimeError(f"no subject with {wanted.name} found")


def slice_through(acquisition: Acquisition, world: np.ndarray | None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The acquired slice (array axis 2) through a world point (or the middle), and the point in-plane."""
    image = acquisition.image
    if world is None:
        return image[:, :, image.shape[2] // 2], None
    ijk = np.linalg.inv(acquisition.affine) @ np.array([*world, 1.0])
    k = int(np.clip(round(ijk[2]), 0, image.shape[2] - 1))
    return image[:, :, k], (float(ijk[0]), float(ijk[1]))


def show(axis: plt.Axes, acquisition: Acquisition, world: np.ndarray | None, title: str) -> None:
    """One slice in its acquisition plane, square pixels, lesion marked."""
    picture, point = slice_through(acquisition, world)
    axis.imshow(picture.T, cmap="gray", origin="lower", vmin=0, vmax=float(np.percentile(acquisition.image, 99.7)))
    if point is not None:
        axis.plot(*point, marker="o", markersize=22, markerfacecolor="none", markeredgecolor="red", markeredgewidth=1)
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def lesion_figure(site: SiteProfile, wanted: F, seed: int, path: Path, caption: str) -> None:
    """T2 and T1 through the first lesion of type ``wanted`` in a subject of ``site``."""
    shading = dataclasses.replace(site.cohort.signs, t2_shading=1.0)
    site = dataclasses.replace(site, cohort=dataclasses.replace(site.cohort, signs=shading))
    others = (F.ENDOMETRIOMA, F.HAEMORRHAGIC_CYST, F.DERMOID)  # keep the figure about one lesion
    spec, index = find_subject(site, wanted, avoid=tuple(f for f in others if f != wanted), seed=seed)
    acquisitions, records = render_subject(spec, site, "full", np.random.default_rng([seed, 0, index]))
    record = next(r for r in records if r["finding"] == wanted.name.lower())
    centre = np.array(record["centre_mm"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    for axis, name in zip(axes, ("T2", "T1"), strict=True):
        sequence = site.t2 if name == "T2" else site.t1
        label = f"{sequence.kind}{' FS' if sequence.fat_suppression else ''}, {sequence.plane}"
        show(axis, acquisitions[name], centre, f"{name} ({label}, {site.field_strength} T)")
    fig.suptitle(f"{caption}: {spec.subject_id}, radius {record['radius_mm']} mm (red circle)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def sites_figure(sites: list[SiteProfile], seed: int, path: Path) -> None:
    """One subject per site, mid-slices of T2 and T1 in each site's own planes and resolution."""
    fig, axes = plt.subplots(2, len(sites), figsize=(4 * len(sites), 8))
    for column, site in enumerate(sites):
        spec = draw_subject(np.random.default_rng([seed, column, 0]), site.cohort, f"{site.name}-0001")
        acquisitions, _ = render_subject(spec, site, "full", np.random.default_rng([seed, column, 0]))
        for row, name in enumerate(("T2", "T1")):
            sequence = site.t2 if name == "T2" else site.t1
            title = f"{site.name} {name}: {sequence.plane}, {sequence.in_plane_mm} x {sequence.slice_mm} mm"
            show(axes[row, column], acquisitions[name], None, title)
    fig.suptitle("demo3 sites: each scanner's own planes, resolution, contrast, bias and noise", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    """Write the three figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sites = load_preset("demo3")
    lesion_figure(sites[1], F.ENDOMETRIOMA, args.seed, args.out / "synth_positive.png", "Positive: endometrioma")
    lesion_figure(sites[1], F.HAEMORRHAGIC_CYST, args.seed, args.out / "synth_mimic.png", "Mimic: haemorrhagic cyst")
    sites_figure(sites, args.seed, args.out / "synth_sites.png")
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
