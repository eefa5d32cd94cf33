"""Site profiles for ``endofed synth``: each site's scanner protocol and cohort, as plain YAML.

A profile file holds ``sites:``, a list of site entries; every key has a default (below, each with a
comment) so a profile only states what differs. Built-in presets live in ``endofed/synth/presets/``.
Two sequence keys vary a site's scans per subject (drawn from a stream of their own, so a profile without them
renders as before): ``oblique_deg`` tilts the slices, ``ghosting_rate`` decides which scans show the ghost.
The same strict builder as the main config refuses unknown keys (with a did-you-mean) and bad values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from endofed.config_builder import build, read_yaml
from endofed.errors import ConfigError
from endofed.synth.anatomy import AnatomyParams

PLANES = {"sagittal": "RL", "coronal": "AP", "axial": "SI"}  # slice direction letters per plane
SEQUENCE_KINDS = ("t2_tse", "t1_gre", "t1_tse")
SCALES = ("tiny", "full")
TINY_IN_PLANE_FACTOR, TINY_MIN_IN_PLANE_MM = 2.0, 1.5
MAX_OBLIQUE_DEG = 45.0  # beyond this the slices would lie nearer another plane than their own
_AXIS_OF = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


MAX_SUBJECTS = 100_000  # per synthetic site (a typo of 1e9 would write until the disk is full)


@dataclass(frozen=True)
class SequenceProfile:
    """One acquired sequence (T2 or T1) of a site's protocol, at full (clinical) scale."""

    kind: str = "t2_tse"  # t2_tse | t1_gre (3D spoiled GRE, e.g. VIBE) | t1_tse
    plane: str = "sagittal"  # axial | sagittal | coronal: the slice direction
    orientation: str = "PSR"  # NIfTI header orientation code; its third letter must lie along the slice direction
    in_plane_mm: float = 0.6  # in-plane voxel size
    slice_mm: float = 4.0  # slice thickness (the partial-volume window)
    gap_mm: float = 0.4  # gap between slices (slice spacing = thickness + gap)
    fov_mm: tuple[float, float] = (240.0, 240.0)  # in-plane field of view
    slices: int = 24  # number of slices
    tr_ms: float = 4000.0  # repetition time
    te_ms: float = 100.0  # echo time (effective TE for TSE)
    flip_deg: float = 90.0  # flip angle (used by t1_gre)
    fat_suppression: bool = False  # spectral fat saturation
    fat_residual: tuple[float, float] = (0.05, 0.2)  # fraction of fat signal left by fat saturation (varies in FOV)
    snr: float = 25.0  # signal-to-noise ratio of muscle (Rician noise)
    bias_amplitude: float = 0.15  # smooth multiplicative bias field, +- this fraction
    ghosting: float = 0.0  # motion/peristalsis ghost amplitude along phase encoding (0 = none)
    ghosting_rate: float = 1.0  # share of subjects whose scan shows that ghost, drawn per subject (1 = every one)
    oblique_deg: float = 0.0  # max slice tilt off the axes (<= 45): per subject uniform in +-this, random in-plane axis
    scanner_max: tuple[float, float] = (1500.0, 4000.0)  # int16 value of the 99.5th percentile (scanner units)

    def __post_init__(self) -> None:
        if self.kind not in SEQUENCE_KINDS:
            raise ConfigError(f"sequence kind must be one of {SEQUENCE_KINDS}, got {self.kind!r}")
        if self.plane not in PLANES:
            raise ConfigError(f"plane must be one of {tuple(PLANES)}, got {self.plane!r}")
        code = self.orientation.upper()
        if len(code) != 3 or sorted(_AXIS_OF.get(c, 9) for c in code) != [0, 1, 2]:
            raise ConfigError(f"orientation must be a code like PSR or LAS, got {self.orientation!r}")
        if code[2] not in PLANES[self.plane]:
            raise ConfigError(
                f"orientation {self.orientation!r}: its third letter (slice axis) must be one of "
                f"{'/'.join(PLANES[self.plane])} for a {self.plane} acquisition"
            )
        for name in ("in_plane_mm", "slice_mm", "slices", "tr_ms", "snr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.gap_mm < 0 or self.te_ms < 0 or not 0 <= self.ghosting < 1 or not 0 <= self.bias_amplitude < 1:
            raise ConfigError(
                f"need gap_mm >= 0, te_ms >= 0, 0 <= ghosting < 1, 0 <= bias_amplitude < 1, got "
                f"{self.gap_mm!r}, {self.te_ms!r}, {self.ghosting!r}, {self.bias_amplitude!r}"
            )
        if not 0 <= self.ghosting_rate <= 1:
            raise ConfigError(f"ghosting_rate must be in [0, 1], got {self.ghosting_rate!r}")
        if not 0 <= self.oblique_deg <= MAX_OBLIQUE_DEG:
            raise ConfigError(f"oblique_deg must be in [0, {MAX_OBLIQUE_DEG:g}] degrees, got {self.oblique_deg!r}")


@dataclass(frozen=True)
class SignRates:
    """Among positive subjects: probability of each sign (at least one is always present)."""

    endometrioma: float = 0.55  # ovarian endometrioma
    deep_nodule: float = 0.5  # deep infiltrating nodule
    pod_obliteration: float = 0.3  # pouch-of-Douglas obliteration
    bilateral_endometrioma: float = 0.3  # given an endometrioma: a second one on the other side
    t2_shading: float = 0.75  # share of endometriomas with T2 shading (the rest: T2 intermediate, no shading)


@dataclass(frozen=True)
class MimicRates:
    """Probability of each mimic in *every* subject (independent of the label)."""

    simple_cyst: float = 0.35  # simple / functional ovarian cyst
    haemorrhagic_cyst: float = 0.25  # T1 bright without T2 shading
    dermoid: float = 0.15  # mature teratoma (fat)
    fibroid: float = 0.3  # leiomyoma (T2 dark)


@dataclass(frozen=True)
class CohortProfile:
    """Who is scanned at a site."""

    subjects: int = 100  # number of subjects
    test_subjects: int = 0  # extra labelled subjects fixed as the site's test set (manifest split; 0 = none)
    labelled_fraction: float = 0.5  # share of subjects with a label in the manifest (rest: unlabelled)
    prevalence: float = 0.4  # share of subjects with endometriosis
    label_noise: float = 0.03  # share of labels flipped (imperfect surgical confirmation)
    signs: SignRates = field(default_factory=SignRates)  # signs among positives
    mimics: MimicRates = field(default_factory=MimicRates)  # mimics in everyone
    anatomy: AnatomyParams = field(default_factory=AnatomyParams)  # anatomy distribution

    def __post_init__(self) -> None:
        if not 1 <= self.subjects <= MAX_SUBJECTS:
            raise ConfigError(f"subjects must be 1 to {MAX_SUBJECTS:,} per site, got {self.subjects!r}")
        if self.test_subjects < 0:
            raise ConfigError(f"test_subjects must be >= 0, got {self.test_subjects!r}")
        probabilities = {
            "labelled_fraction": self.labelled_fraction,
            "prevalence": self.prevalence,
            "label_noise": self.label_noise,
            **{f"signs.{k}": v for k, v in dataclasses.asdict(self.signs).items()},
            **{f"mimics.{k}": v for k, v in dataclasses.asdict(self.mimics).items()},
        }
        for name, value in probabilities.items():
            if not 0 <= value <= 1:
                raise ConfigError(f"cohort.{name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class SiteProfile:
    """One simulated hospital."""

    name: str = "site"  # site id (folder and site YAML name)
    field_strength: float = 1.5  # tesla (contrast is interpolated between 1.5 T and 3 T values)
    position_jitter_mm: float = 10.0  # random offset of the FOV centre from the pelvis centre
    t2: SequenceProfile = field(default_factory=SequenceProfile)  # T2 TSE
    t1: SequenceProfile = field(  # T1 (3D GRE by default)
        default_factory=lambda: SequenceProfile(
            kind="t1_gre",
            plane="axial",
            orientation="LAS",
            in_plane_mm=1.4,
            slice_mm=3.0,
            gap_mm=0.0,
            fov_mm=(300.0, 260.0),
            slices=40,
            tr_ms=4.5,
            te_ms=2.0,
            flip_deg=12.0,
            fat_suppression=True,
            snr=20.0,
        )
    )
    cohort: CohortProfile = field(default_factory=CohortProfile)  # who is scanned

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"site name must be letters, digits, '-' or '_', got {self.name!r}")
        if not 0.5 <= self.field_strength <= 7:
            raise ConfigError(f"field_strength must be in [0.5, 7] T, got {self.field_strength!r}")


def at_scale(sequence: SequenceProfile, scale: str) -> SequenceProfile:
    """The sequence at ``scale``: ``full`` as written; ``tiny`` with 2x coarser in-plane voxels (>= 1.5 mm)."""
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {SCALES}, got {scale!r}")
    if scale == "full":
        return sequence
    in_plane = max(sequence.in_plane_mm * TINY_IN_PLANE_FACTOR, TINY_MIN_IN_PLANE_MM)
    return dataclasses.replace(sequence, in_plane_mm=in_plane)


def parse_profile(raw: dict[str, object], source: str) -> list[SiteProfile]:
    """Sites of a parsed profile mapping (``{"sites": [...]}``)."""
    unknown = set(raw) - {"sites"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {sorted(unknown)[0]!r} (expected 'sites')")
    sites = raw.get("sites")
    if not isinstance(sites, list) or not sites:
        raise ConfigError(f"{source}: 'sites' must be a non-empty list of site entries")
    try:
        parsed = [build(SiteProfile, entry, f"sites[{i}]") for i, entry in enumerate(sites)]
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    names = [site.name for site in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: site names must be unique, got {names}")
    return parsed


def load_profile(path: str | Path) -> list[SiteProfile]:
    """Load a profile YAML file."""
    return parse_profile(read_yaml(path), str(path))


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("endofed.synth") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> list[SiteProfile]:
    """Load a built-in preset by name (e.g. ``demo3``, ``tiny``)."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; built-in presets: {', '.join(preset_names())}")
    resource = resources.files("endofed.synth") / "presets" / f"{name}.yaml"
    with resources.as_file(resource) as path:
        return load_profile(path)
