"""A minimal geometric T1/T2 example site (``endofed data example``), for the data-layer demo and tests.

This is *not* the benchmark (that is :mod:`endofed.synth.cohort`, a physics-based pelvis phantom). It renders a few
ellipsoids with fixed T1/T2 grey levels so that the data layer can be exercised on files with the
properties of real pelvic MRI: int16 scanner units, T2 and T1 of one exam on different grids, orientations
(LAS, PSR, LSP, RAS), resolutions and fields of view, thick slices, noise. Positives carry a small
"endometrioma" (T1 bright, T2 dark); some negatives carry a simple cyst (T1 dark, T2 bright). The site folder
is written by :mod:`endofed.synth.site_files`, like a synthetic cohort's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from endofed.data.geometry import make_affine
from endofed.synth.site_files import manifest_row, save_subject, write_manifest_and_yaml

T2_ORIENTATIONS = ("LAS", "PSR", "LSP", "RAS")
# T1 protocols: (orientation, spacing mm, FOV mm); 3D GRE-like axial and coronal acquisitions.
T1_PROTOCOLS = (
    ("RAS", (1.6, 1.6, 3.6), (260.0, 220.0, 100.0)),
    ("LPS", (1.2, 1.2, 3.0), (300.0, 240.0, 90.0)),
    ("RSA", (1.4, 1.4, 3.6), (280.0, 240.0, 110.0)),
)


@dataclass(frozen=True)
class Blob:
    """An ellipsoid with a T1 and a T2 grey level (arbitrary units)."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    t1: float
    t2: float


def render(blobs: Sequence[Blob], affine: np.ndarray, shape: tuple[int, int, int], modality: str) -> np.ndarray:
    """Sample the blobs at the voxel centres of a grid (later blobs paint over earlier ones).

    Returns:
        ``shape`` float32 array of grey levels (0 = air).
    """
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    world = [affine[r, 0] * i + affine[r, 1] * j + affine[r, 2] * k + affine[r, 3] for r in range(3)]
    out = np.zeros(shape, dtype=np.float32)
    for blob in blobs:
        inside = sum(((world[a] - blob.centre[a]) / blob.radii[a]) ** 2 for a in range(3)) <= 1.0
        out[inside] = blob.t1 if modality == "t1" else blob.t2
    return out


def subject_blobs(rng: np.random.Generator, positive: bool) -> list[Blob]:
    """Body, muscle, bladder and uterus with random size/position, plus a lesion or a mimic."""

    def jitter(scale: float) -> np.ndarray:
        return rng.uniform(-scale, scale, size=3)

    shift = jitter(8.0)
    blobs = [
        Blob(tuple(shift), (150.0, 110.0, 120.0), t1=900, t2=700),  # subcutaneous/visceral fat
        Blob(tuple(shift), (130.0, 95.0, 110.0), t1=500, t2=300),  # muscle and soft tissue
        Blob(tuple(shift + [0, 35, 15] + jitter(4)), tuple(rng.uniform(25, 40, 3)), t1=250, t2=1500),  # bladder
        Blob(tuple(shift + [0, 0, 30] + jitter(5)), tuple(rng.uniform(20, 35, 3)), t1=550, t2=600),  # uterus
    ]
    side = rng.choice([-1.0, 1.0])
    where = shift + [side * rng.uniform(25, 40), rng.uniform(-15, 5), rng.uniform(10, 35)]
    radius = tuple(rng.uniform(6, 14, 3))
    if positive:
        blobs.append(Blob(tuple(where), radius, t1=1200, t2=180))  # endometrioma: T1 bright, T2 dark
    elif rng.random() < 0.5:
        blobs.append(Blob(tuple(where), radius, t1=200, t2=1600))  # simple cyst: T1 dark, T2 bright
    return blobs


def _acquire(
    blobs: Sequence[Blob],
    modality: str,
    code: str,
    spacing: tuple[float, float, float],
    fov_mm: tuple[float, float, float],
    centre: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one int16 image as a scanner would store it (noise, arbitrary scaling); returns it and its affine."""
    nx, ny, nz = (max(2, round(f / s)) for f, s in zip(fov_mm, spacing, strict=True))
    shape = (nx, ny, nz)
    affine = make_affine(code, spacing, shape, tuple(centre))
    clean = render(blobs, affine, shape, modality)
    noisy = np.abs(clean + rng.normal(0, 25, shape) + 1j * rng.normal(0, 25, shape))  # Rician magnitude
    return np.clip(noisy * rng.uniform(0.8, 2.5), 0, 32767).astype(np.int16), affine


def write_example_site(
    out_dir: Path,
    n_subjects: int = 12,
    seed: int = 0,
    labelled_fraction: float = 0.75,
    in_plane_mm: float = 0.6,
    site_id: str = "example",
) -> Path:
    """Write ``<out_dir>/{data/<subject>/T1.nii.gz,T2.nii.gz, manifest.csv, site.yaml}``.

    Args:
        out_dir: destination (created; existing files are not overwritten).
        n_subjects: number of subjects; labels alternate negative/positive before shuffling.
        seed: random seed.
        labelled_fraction: share of subjects with a label in the manifest.
        in_plane_mm: T2 in-plane spacing (real T2 TSE: 0.5-0.65 mm; coarser = faster tests).
        site_id: site name written to ``site.yaml``.

    Returns:
        Path of the written ``site.yaml``.
    """
    out_dir = Path(out_dir)
    if (out_dir / "site.yaml").exists():
        raise FileExistsError(f"an example site already exists in {out_dir}")
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_subjects):
        subject = f"sub-{index + 1:03d}"
        positive = index % 2 == 1
        blobs = subject_blobs(rng, positive)
        centre = np.asarray(blobs[0].centre)
        t2_code = T2_ORIENTATIONS[index % len(T2_ORIENTATIONS)]
        t2 = _acquire(blobs, "t2", t2_code, (in_plane_mm, in_plane_mm, 3.6), (200, 200, 80), centre, rng)
        t1_centre = centre + rng.uniform(-15, 15, 3)
        t1_code, t1_spacing, t1_fov = T1_PROTOCOLS[index % len(T1_PROTOCOLS)]
        t1 = _acquire(blobs, "t1", t1_code, t1_spacing, t1_fov, t1_centre, rng)
        save_subject(out_dir, subject, {"T2": t2, "T1": t1})
        rows.append(manifest_row(subject, int(positive) if rng.random() < labelled_fraction else None))
    return write_manifest_and_yaml(out_dir, out_dir / "site.yaml", site_id, rows, device="cpu")
