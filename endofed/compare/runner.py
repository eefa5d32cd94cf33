"""``endofed compare``: plan the units of every arm and seed, run the missing ones, check them, write the report.

The arms, and how each plans and runs its units, are in :mod:`endofed.compare.arms`. Finished units are kept
(``unit.json``) and skipped when the command runs again, so an interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

import endofed
from endofed.compare.arms import OnStart, PlannedUnit, selected
from endofed.compare.spec import CompareSpec
from endofed.compare.units import Site, UnitResult, fingerprint, load_unit, save_unit
from endofed.config import ExperimentConfig, load_site_config, to_dict
from endofed.data.loaders import label_of
from endofed.errors import ConfigError, DataError
from endofed.training.cohort import load_cohort

LOGGER = logging.getLogger(__name__)


def plan_units(spec: CompareSpec, site_names: Sequence[str]) -> list[PlannedUnit]:
    """Every unit of the experiment, in an order where each unit's inputs come first.

    Per seed: every selected arm's units (report order), then the label-efficiency runs of the arms that
    have them, fraction by fraction. An input shared by several arms (the seed's federation) is planned once.
    """
    arms = selected(spec.arms)
    planned: dict[str, PlannedUnit] = {}
    for seed in spec.seeds:
        units = [unit for arm in arms for unit in arm.plan(seed, site_names)]
        for fraction in spec.label_fractions:
            units += [unit for arm in arms if arm.label_efficiency for unit in arm.plan(seed, site_names, fraction)]
        for unit in units:
            planned.setdefault(unit.name, unit)
    return list(planned.values())


def load_sites(site_yamls: Sequence[Path], cfg: ExperimentConfig) -> list[Site]:
    """Check every site's data (filling its cache) and fix its split; refuse a site that cannot take part."""
    sites = []
    for path in site_yamls:
        config = load_site_config(path)
        site = Site(config, Path(path).resolve(), load_cohort(config, cfg))
        for what, cases in (("development", site.dev_cases().cases), ("test", site.test_cases().cases)):
            classes = {label_of(r) for r in cases}
            if classes != {0, 1}:
                raise DataError(
                    f"site {site.name!r} has {len(cases)} labelled {what} case(s) with labels {sorted(classes)}: "
                    "every site needs both classes among its labelled development and test patients",
                    "too_few_cases",
                )
        sites.append(site)
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise ConfigError(f"two site YAMLs name the same site id: {names}")
    return sites


def code_version(app_dir: Path) -> str:
    """Endofed's version and, in a git checkout, the commit (with '+dirty' for local changes)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(app_dir), "describe", "--always", "--dirty=+dirty"],  # noqa: S607
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return f"{endofed.__version__} ({commit})"


@dataclass
class Context:
    """What every unit needs."""

    spec: CompareSpec
    sites: list[Site]
    out: Path
    app_dir: Path
    configs: dict[int, ExperimentConfig]

    def site(self, name: str) -> Site:
        """The site named ``name``."""
        return next(s for s in self.sites if s.name == name)

    def sites_of(self, unit: PlannedUnit) -> list[Site]:
        """The sites a unit trains on, in its order."""
        return [self.site(name) for name in unit.sites]

    def unit_folder(self, unit: PlannedUnit) -> Path:
        """Where a unit keeps its outputs and ``unit.json``."""
        return self.out / "units" / unit.name

    def config_yaml(self, seed: int, n_sites: int) -> Path:
        """The seed's config file for a federation of ``n_sites`` (written here when fewer than every site)."""
        if n_sites == len(self.sites):
            return self.out / "configs" / f"seed{seed}.yaml"
        path = self.out / "configs" / f"seed{seed}_{n_sites}sites.yaml"  # min_sites: the federation waits for fewer
        path.write_text(yaml.safe_dump(to_dict(self.spec.experiment_config(seed, n_sites)), sort_keys=False))
        return path

    def resources(self) -> tuple[float, float]:
        """CPU and GPU share of each simulated site."""
        gpus = self.spec.gpus_per_site
        if gpus < 0:
            gpus = 1.0 / len(self.sites) if torch.cuda.is_available() else 0.0
        return self.spec.cpus_per_site, gpus


def run_unit(ctx: Context, unit: PlannedUnit, on_federation: OnStart | None = None) -> UnitResult:
    """Run one unit (its inputs exist: see :func:`plan_units`)."""
    result = unit.run(ctx, unit, on_federation)
    result.name, result.arm, result.fraction = unit.name, unit.arm, unit.fraction
    return result


def prepare(spec: CompareSpec, site_yamls: Sequence[Path], out: Path, app_dir: Path, fresh: bool) -> Context:
    """Load configs and sites, and write the resolved experiment, configs and code version into ``out``."""
    if not site_yamls:
        raise ConfigError("no sites: give --sites or list them under 'sites' in the experiment YAML")
    for arm in selected(spec.arms):
        if len(site_yamls) < arm.min_sites:
            raise ConfigError(f"arm {arm.name!r} needs at least {arm.min_sites} sites, got {len(site_yamls)}")
    configs = {seed: spec.experiment_config(seed, len(site_yamls)) for seed in spec.seeds}
    sites = load_sites(site_yamls, configs[spec.seeds[0]])
    if fresh and out.exists():
        shutil.rmtree(out / "units", ignore_errors=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for seed, cfg in configs.items():
        (out / "configs" / f"seed{seed}.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    resolved = to_dict(spec) | {"sites": [str(s.yaml) for s in sites], "code_version": code_version(app_dir)}
    (out / "experiment.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    return Context(spec, sites, out, app_dir, configs)


def run_all(
    ctx: Context,
    units: Sequence[PlannedUnit],
    on_unit: Callable[[PlannedUnit, UnitResult, bool], None] | None = None,
    before_unit: Callable[[PlannedUnit], None] | None = None,
    on_federation: OnStart | None = None,
) -> list[UnitResult]:
    """Run the units that have not finished yet; returns every unit's result, in plan order."""
    results = []
    for unit in units:
        cfg = ctx.configs[unit.seed]
        expected = fingerprint(cfg, ctx.sites, unit.name)
        folder = ctx.unit_folder(unit)
        done = load_unit(folder, expected)
        if done is None:
            if before_unit is not None:
                before_unit(unit)
            done = run_unit(ctx, unit, on_federation)
            done.fingerprint = expected
            save_unit(folder, done)
            fresh = True
        else:
            fresh = False
        results.append(done)
        if on_unit is not None:
            on_unit(unit, done, fresh)
    return results
