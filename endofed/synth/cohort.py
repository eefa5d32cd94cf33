"""Draw subjects for a site profile, render them and write a ready-to-check site folder.

Output of one site ``NAME`` under ``OUT``::

    OUT/site_NAME.yaml                     site config for `endofed data check` / training / federation
    OUT/NAME/manifest.csv                  subject_id,t1,t2,label (blank label = unlabelled); with
                                           cohort.test_subjects also split (train, or test for those)
    OUT/NAME/data/<subject>/{T1,T2}.nii.gz int16 scanner units, each on its own grid and orientation
    OUT/NAME/truth/subjects.csv            true and observed labels, findings and sizes, each scan's tilt and
                                           ghost amplitude (tests/benchmarks only)
    OUT/NAME/truth/<subject>_{T1,T2}_findings.nii.gz  ground-truth finding map on each acquired grid
    OUT/NAME/truth/<subject>_{T1,T2}_tissues.nii.gz   ground-truth tissue map on each acquired grid

Randomness: subject ``i`` of site ``k`` uses ``numpy.random.default_rng([seed, k, i])``, so a cohort is the
same on any machine and a subject does not change when others are added. Its acquisition variation (slice
tilt, whether a scan shows the ghost: ``render.draw_acquisition``) comes from that generator's first child
(``rng.spawn``), a stream of its own: profiles without those knobs render bit-identically to before, and
turning one on changes nothing else about the subject.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endofed.synth.anatomy import MIMICS, POSITIVE_FINDINGS, F, Scene, build_normal_anatomy
from endofed.synth.findings import (
    add_deep_nodule,
    add_dermoid,
    add_endometrioma,
    add_fibroid,
    add_haemorrhagic_cyst,
    add_pod_obliteration,
    add_simple_cyst,
)
from endofed.synth.profile import CohortProfile, SiteProfile, at_scale
from endofed.synth.render import Acquisition, acquire, draw_acquisition
from endofed.synth.site_files import manifest_row, save_nifti, save_subject, write_csv, write_manifest_and_yaml
from endofed.synth.tissues import sample_tissues

_ADDERS: dict[F, Callable[[Scene, np.random.Generator], dict[str, Any]]] = {
    F.ENDOMETRIOMA: add_endometrioma,
    F.DEEP_NODULE: add_deep_nodule,
    F.POD_OBLITERATION: add_pod_obliteration,
    F.SIMPLE_CYST: add_simple_cyst,
    F.HAEMORRHAGIC_CYST: add_haemorrhagic_cyst,
    F.DERMOID: add_dermoid,
    F.FIBROID: add_fibroid,
}


@dataclass(frozen=True)
class SubjectSpec:
    """What a subject has, before any rendering.

    Attributes:
        subject_id: e.g. ``"siteA-0007"``.
        label: true label (1 = endometriosis).
        observed: label written to the manifest (after label noise), ``None`` when unlabelled.
        findings: the findings to place (a finding may repeat, e.g. bilateral endometriomas).
    """

    subject_id: str
    label: int
    observed: int | None
    findings: tuple[F, ...]


def draw_subject(
    rng: np.random.Generator, cohort: CohortProfile, subject_id: str, labelled: bool = False
) -> SubjectSpec:
    """Draw label, signs (positives: at least one) and mimics (everyone, independent of the label).

    ``labelled`` forces a label (test subjects); otherwise ``cohort.labelled_fraction`` decides. The same
    draws are made either way.
    """
    label = int(rng.random() < cohort.prevalence)
    findings: list[F] = []
    if label:
        rates = {
            F.ENDOMETRIOMA: cohort.signs.endometrioma,
            F.DEEP_NODULE: cohort.signs.deep_nodule,
            F.POD_OBLITERATION: cohort.signs.pod_obliteration,
        }
        findings = [sign for sign, p in rates.items() if rng.random() < p]
        if not findings:
            weights = np.array(list(rates.values())) + 1e-9
            findings = [POSITIVE_FINDINGS[int(rng.choice(3, p=weights / weights.sum()))]]
        if F.ENDOMETRIOMA in findings and rng.random() < cohort.signs.bilateral_endometrioma:
            findings.append(F.ENDOMETRIOMA)
    mimic_rates = dict(zip(MIMICS, (cohort.mimics.simple_cyst, cohort.mimics.haemorrhagic_cyst,
                                    cohort.mimics.dermoid, cohort.mimics.fibroid), strict=True))  # fmt: skip
    findings += [mimic for mimic, p in mimic_rates.items() if rng.random() < p]
    flipped = rng.random() < cohort.label_noise
    labelled = bool(rng.random() < cohort.labelled_fraction) or labelled
    observed = (1 - label if flipped else label) if labelled else None
    return SubjectSpec(subject_id, label, observed, tuple(findings))


def build_scene(
    spec: SubjectSpec, cohort: CohortProfile, rng: np.random.Generator
) -> tuple[Scene, list[dict[str, Any]]]:
    """Anatomy (with the pouch of Douglas closed and the rectum tethered if obliterated) plus findings."""
    obliterated = F.POD_OBLITERATION in spec.findings
    gap = float(rng.uniform(0.0, 1.5)) if obliterated else float(rng.uniform(5.0, 15.0))
    tether = float(rng.uniform(5.0, 12.0)) if obliterated else 0.0
    scene = build_normal_anatomy(rng, cohort.anatomy, gap, tether)
    first_ovary = int(rng.integers(2))
    records, endometriomas = [], 0
    for finding in spec.findings:
        if finding == F.ENDOMETRIOMA:  # a second one (bilateral disease) goes on the other ovary
            records.append(add_endometrioma(scene, rng, cohort.signs.t2_shading, first_ovary + endometriomas))
            endometriomas += 1
        else:
            records.append(_ADDERS[finding](scene, rng))
    return scene, records


def render_subject(
    spec: SubjectSpec, site: SiteProfile, scale: str, rng: np.random.Generator
) -> tuple[dict[str, Acquisition], list[dict[str, Any]]]:
    """Render T1 and T2 of one subject at ``scale``; returns the acquisitions and the finding records."""
    scene, records = build_scene(spec, site.cohort, rng)
    tissues = sample_tissues(rng, site.field_strength)
    centre = rng.normal(0.0, site.position_jitter_mm / 2.0, 3)
    variation = rng.spawn(1)[0]  # tilt and artefact draws: a child stream, so rng's own draws never shift
    acquisitions = {}
    for name, sequence in (("T2", site.t2), ("T1", site.t1)):
        scaled = at_scale(sequence, scale)
        acquisitions[name] = acquire(scene, scaled, tissues, centre, rng, draw_acquisition(scaled, variation))
    return acquisitions, records


def acquisition_record(acquisitions: dict[str, Acquisition]) -> dict[str, dict[str, float]]:
    """Per scan: its slice tilt (degrees, 0 = axis-aligned) and the ghost amplitude it shows (0 = none)."""
    return {name: {"tilt_deg": acq.tilt_deg, "ghosting": acq.ghosting} for name, acq in acquisitions.items()}


def write_site(
    site: SiteProfile,
    site_index: int,
    out: Path,
    scale: str,
    seed: int,
    on_subject: Callable[[SubjectSpec], None] | None = None,
) -> Path:
    """Generate and write one site (see the module docstring); returns the path of its site YAML."""
    root = out / site.name
    manifest_rows, truth_rows = [], []
    with_test = site.cohort.test_subjects > 0
    for index in range(site.cohort.subjects + site.cohort.test_subjects):
        rng = np.random.default_rng([seed, site_index, index])
        is_test = index >= site.cohort.subjects
        spec = draw_subject(rng, site.cohort, f"{site.name}-{index + 1:04d}", labelled=is_test)
        acquisitions, records = render_subject(spec, site, scale, rng)
        save_subject(root, spec.subject_id, {name: (acq.image, acq.affine) for name, acq in acquisitions.items()})
        for name, acq in acquisitions.items():
            save_nifti(acq.findings, acq.affine, root / "truth" / f"{spec.subject_id}_{name}_findings.nii.gz")
            save_nifti(acq.tissues, acq.affine, root / "truth" / f"{spec.subject_id}_{name}_tissues.nii.gz")
        split = ("test" if is_test else "train") if with_test else None
        row = manifest_row(spec.subject_id, spec.observed, split)
        manifest_rows.append(row)
        acquisition = json.dumps(acquisition_record(acquisitions))
        truth_rows.append([spec.subject_id, spec.label, row[3], json.dumps(records), acquisition])  # row[3]: observed
        if on_subject is not None:
            on_subject(spec)
    header = ["subject_id", "label_true", "label_observed", "findings", "acquisition"]
    write_csv(root / "truth" / "subjects.csv", header, truth_rows)
    return write_manifest_and_yaml(root, out / f"site_{site.name}.yaml", site.name, manifest_rows, device="auto")


def generate(
    sites: list[SiteProfile],
    out: Path,
    scale: str,
    seed: int,
    on_subject: Callable[[SubjectSpec], None] | None = None,
) -> list[Path]:
    """Write every site of a profile under ``out``; returns the site YAML paths."""
    return [write_site(site, index, out, scale, seed, on_subject) for index, site in enumerate(sites)]
