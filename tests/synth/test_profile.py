from __future__ import annotations

import pytest

from endofed.errors import ConfigError
from endofed.synth.profile import SequenceProfile, at_scale, load_preset, load_profile, preset_names


def test_presets_load():
    assert {"demo3", "tiny"} <= set(preset_names())
    demo = load_preset("demo3")
    assert [s.name for s in demo] == ["hospital_a", "hospital_b", "hospital_c"]
    assert sum(s.cohort.subjects for s in demo) == 300
    labelled = [round(s.cohort.subjects * s.cohort.labelled_fraction) for s in demo]
    assert all(20 <= n <= 40 for n in labelled)  # small labelled sets, as at real hospitals
    assert len({(s.t2.plane, s.t1.kind, s.t1.fat_suppression, s.field_strength) for s in demo}) == 3


def test_evidence_preset_is_the_issue_18_benchmark():
    sites = load_preset("evidence5")
    assert len(sites) >= 5
    for site in sites:
        labels = site.cohort.subjects * site.cohort.labelled_fraction
        assert 10 <= labels <= 40 and 100 <= site.cohort.subjects <= 300, site.name  # few labels, many scans
        assert site.cohort.test_subjects >= 100 and site.t1.fat_suppression, site.name  # power; ESUR protocol
    assert sum(s.t2.oblique_deg > 0 for s in sites) >= 2 and any(0 < s.t2.ghosting_rate < 1 for s in sites)
    differ = {(s.field_strength, s.t2.plane, s.t1.kind, s.cohort.prevalence) for s in sites}
    assert len(differ) == len(sites)


def test_the_ceiling_preset_scans_as_the_evidence_sites_do():
    """The positive control changes who is labelled, never how anyone is scanned."""
    evidence, ceiling = load_preset("evidence5"), load_preset("evidence5_ceiling")
    assert [s.name for s in ceiling] == [s.name for s in evidence]
    for e, c in zip(evidence, ceiling, strict=True):
        scanned = ("field_strength", "position_jitter_mm", "t1", "t2")
        assert [getattr(c, k) for k in scanned] == [getattr(e, k) for k in scanned], e.name
        who = ("prevalence", "signs", "mimics", "anatomy")
        assert [getattr(c.cohort, k) for k in who] == [getattr(e.cohort, k) for k in who], e.name
        assert c.cohort.labelled_fraction == 1.0 and c.cohort.label_noise == 0.0 and c.cohort.subjects == 150


def test_tiny_scale_coarsens_in_plane_only():
    sequence = SequenceProfile(in_plane_mm=0.6, slice_mm=4.0)
    tiny = at_scale(sequence, "tiny")
    assert tiny.in_plane_mm == 1.5 and tiny.slice_mm == 4.0 and tiny.fov_mm == sequence.fov_mm
    assert at_scale(sequence, "full") == sequence
    with pytest.raises(ConfigError, match="scale must be one of"):
        at_scale(sequence, "huge")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sites:\n  - name: a\n    t2: {plane: sagittal, orientation: LAS}\n",
            "third letter (slice axis) must be one of R/L",
        ),
        ("sites:\n  - name: a\n    t2: {orientation: XYZ}\n", "orientation must be a code like PSR"),
        ("sites:\n  - name: a\n    t2: {kind: t3}\n", "sequence kind must be one of"),
        ("sites:\n  - name: a\n    cohort: {prevalence: 1.5}\n", "cohort.prevalence must be in [0, 1], got 1.5"),
        ("sites:\n  - name: a\n    t2: {oblique_deg: 50}\n", "oblique_deg must be in [0, 45] degrees, got 50.0"),
        ("sites:\n  - name: a\n    t1: {oblique_deg: -5}\n", "oblique_deg must be in [0, 45] degrees, got -5.0"),
        ("sites:\n  - name: a\n    t2: {ghosting_rate: 1.5}\n", "ghosting_rate must be in [0, 1], got 1.5"),
        ("sites:\n  - name: a\n    t2: {ghosting_rate: -0.1}\n", "ghosting_rate must be in [0, 1], got -0.1"),
        ("sites:\n  - name: a\n    cohort: {test_subjects: -1}\n", "test_subjects must be >= 0, got -1"),
        (
            "sites:\n  - name: a\n    cohort: {subject: 3}\n",
            "unknown config key 'sites[0].cohort.subject' (did you mean 'subjects'?)",
        ),
        ("sites:\n  - name: a\n  - name: a\n", "site names must be unique"),
        ("sites: []\n", "'sites' must be a non-empty list"),
        ("site:\n  - name: a\n", "unknown top-level key 'site'"),
        ("sites:\n  - name: 'a b'\n", "site name must be letters"),
    ],
)
def test_bad_profiles_name_the_problem(tmp_path, text, message):
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'demo4'; built-in presets: demo3"):
        load_preset("demo4")


def test_subjects_are_bounded_so_a_typo_cannot_fill_the_disk():
    from endofed.errors import ConfigError
    from endofed.synth.profile import MAX_SUBJECTS, CohortProfile

    with pytest.raises(ConfigError, match=r"subjects must be 1 to 100,000 per site, got 1000000000"):
        CohortProfile(subjects=1_000_000_000)
    assert CohortProfile(subjects=MAX_SUBJECTS).subjects == MAX_SUBJECTS
