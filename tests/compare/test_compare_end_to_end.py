"""A tiny comparison end to end: 2 sites, tiny volumes, 1 round per phase, every arm, real Flower simulation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from endofed.cli.main import main as endofed_main
from endofed.config import load_config, load_site_config
from endofed.synth.example import write_example_site
from endofed.training.cohort import load_cohort
from tests.helpers import OVERRIDES, TINY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("scratch", "local_ssl", "fed_ssl", "fed_ssl_fedprox", "pooled")
EXTRA = ("finetune.test_fraction=0.3", "finetune.batch_size=2", "pretrain.batch_size=2")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("compare")
    sites = []
    for index, name in enumerate(("north", "south")):
        site = write_example_site(root / name, n_subjects=12, seed=40 + index, labelled_fraction=0.85,
                                  in_plane_mm=1.5, site_id=name)  # fmt: skip
        sites.append(site)
    spec = {
        "name": "e2e",
        "config": TINY,
        "overrides": [*OVERRIDES, *EXTRA],
        "arms": list(ARMS),
        "seeds": [0],
        "pretrain_epochs": 1,
        "finetune_epochs": 1,
        "label_fractions": [0.5],
        "bootstrap": 50,
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, sites


def _units(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "units").rglob("unit.json"))]


@pytest.mark.slow
def test_compare_runs_every_arm_on_the_same_test_patients_without_leakage(experiment, tmp_path, capsys):
    spec_path, sites = experiment
    out = tmp_path / "out"
    argv = [
        "compare",
        "--experiment",
        str(spec_path),
        "--sites",
        *map(str, sites),
        "--out",
        str(out),
        "--app",
        str(ROOT),
    ]
    assert endofed_main(argv) == 0
    printed = capsys.readouterr().out
    assert "test AUC" in printed and str(out / "report.md") in printed

    # results.csv: one row per site (and all sites), arm, label fraction and seed, every metric with its CI
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    metrics = ("auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "ece")
    expected = {"site", "arm", "label_fraction", "seed", "n_test", "n_test_positive"}
    expected |= {f"{m}{s}" for m in metrics for s in ("", "_low", "_high")}
    assert set(rows[0]) == expected
    full = {(r["site"], r["arm"]) for r in rows if float(r["label_fraction"]) == 1.0}
    assert full == {(s, a) for s in ("north", "south", "all sites") for a in ARMS}
    halves = {(r["site"], r["arm"]) for r in rows if float(r["label_fraction"]) == 0.5}
    assert halves == {(s, a) for s in ("north", "south", "all sites") for a in ("scratch", "fed_ssl")}

    # Every arm predicted exactly the site's labelled test patients; none of them trained any arm.
    cfg = load_config(TINY, [*OVERRIDES, *EXTRA, "finetune.split_seed=0"])
    units = _units(out)
    assert {u["arm"] for u in units} == set(ARMS)
    for site_yaml in sites:
        site = load_site_config(site_yaml)
        cohort = load_cohort(site, cfg)
        test = set(cohort.test_ids)
        labelled_test = sorted(r.case.subject_id for r in cohort.select(("test",), labelled_only=True))
        seen_by = {}
        for unit in units:
            if site.site_id in unit["predictions"]:
                seen_by[unit["name"]] = sorted(r["subject"] for r in unit["predictions"][site.site_id])
            trained = set(unit["pretrain_subjects"].get(site.site_id, [])) | set(
                unit["finetune_subjects"].get(site.site_id, [])
            )
            assert not trained & test, unit["name"]
        assert seen_by and all(ids == labelled_test for ids in seen_by.values())
        federation = next(u for u in units if u["name"] == "seed0/federation")
        assert federation["pretrain_subjects"][site.site_id]  # recorded by the site process itself
        pooled = next(u for u in units if u["name"] == "seed0/pooled")
        assert set(pooled["pretrain_subjects"][site.site_id]) == {
            r.case.subject_id for r in cohort.select(("train", "val"), labelled_only=False)
        }

    # The report renders, with its figures.
    report = (out / "report.md").read_text()
    for arm in ARMS:
        assert f"| {arm} |" in report
    assert "## Summary" in report and "No held-out test patient trained any unit" in report
    # The shortcut check: one row per site, every arm's rank correlation with the mean intensities.
    assert "## Shortcut check (mean intensity alone)" in report
    with (out / "shortcut.csv").open() as handle:
        shortcut = list(csv.DictReader(handle))
    n_test = {r["site"]: int(r["n_test"]) for r in rows if r["arm"] == "scratch" and r["site"] != "all sites"}
    assert {r["site"]: int(r["n"]) for r in shortcut} == n_test
    for row in shortcut:
        assert 0.0 <= float(row["auc_T1"]) <= 1.0 and 0.0 <= float(row["auc_T2"]) <= 1.0
        assert all(-1.0 <= float(row[f"rho_{m}_{arm}"]) <= 1.0 for arm in ARMS for m in ("T1", "T2"))
    for figure in ("auc_by_arm.png", "learning_curves.png", "label_efficiency.png"):
        assert (out / "plots" / figure).stat().st_size > 1000 and f"plots/{figure}" in report

    # Resume: a second run keeps every finished unit and only rebuilds the report.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("unit.json")}
    assert endofed_main(argv) == 0
    assert "already done (kept)" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())


def test_compare_refuses_results_of_another_experiment(experiment, tmp_path, capsys):
    spec_path, sites = experiment
    out = tmp_path / "out"
    base = ["compare", "--experiment", str(spec_path), "--sites", *map(str, sites), "--out", str(out)]
    base += ["--app", str(ROOT), "--arms", "scratch"]
    assert endofed_main(base) == 0
    changed = yaml.safe_load(spec_path.read_text()) | {"finetune_epochs": 2}
    other = spec_path.with_name("other.yaml")
    other.write_text(yaml.safe_dump(changed))
    capsys.readouterr()
    assert endofed_main([*base[:2], str(other), *base[3:]]) == 1
    err = capsys.readouterr().err
    assert "holds a result of a different experiment" in err and "Traceback" not in err


@pytest.mark.slow
def test_leave_one_site_out_never_pretrains_on_the_left_out_site(experiment, tmp_path):
    spec_path, sites = experiment
    third = write_example_site(tmp_path / "east", n_subjects=12, seed=42, labelled_fraction=0.85, in_plane_mm=1.5,
                               site_id="east")  # fmt: skip
    out = tmp_path / "out"
    argv = ["compare", "--experiment", str(spec_path), "--sites", *map(str, sites), str(third), "--out", str(out)]
    assert endofed_main([*argv, "--app", str(ROOT), "--arms", "scratch", "loso"]) == 0
    units = {u["name"]: u for u in _units(out)}
    for name in ("north", "south", "east"):
        federation = units[f"seed0/loso/federation_without_{name}"]
        assert set(federation["pretrain_subjects"]) == {"north", "south", "east"} - {name}
        assert set(units[f"seed0/loso/{name}"]["predictions"]) == {name}
    assert "| loso |" in (out / "report.md").read_text()
