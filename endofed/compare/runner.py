"""``endofed compare``: plan the units of every arm and seed, run the missing ones, check them, write the report.

Arms (``endofed.compare.spec.ARMS``), all evaluated on the same held-out test patients of every site:

* ``scratch`` and ``local_ssl``: one unit per site (site data only);
* ``fed_ssl`` and ``fed_ssl_fedprox``: one federated unit per seed (Flower simulation: FedAvg MIM rounds,
  then FedProx fine-tuning rounds; its predictions are the ``fed_ssl_fedprox`` arm's), then one local
  fine-tuning unit per site from the federated encoder (``fed_ssl``);
* ``pooled``: one unit per seed trained on every site's data, predicting every site's test patients;
* label efficiency: ``scratch`` and ``fed_ssl`` fine-tuned again on a share of each site's labels;
* ``loso`` (optional): per site, a federation of the *other* sites (FedAvg MIM), then local fine-tuning at
  the left-out site from that encoder: what a hospital gets from a federation it did not pre-train in.

Finished units are kept (``unit.json``) and skipped when the command runs again, so an interrupted
comparison resumes where it stopped.
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
from endofed.compare.spec import (
    FED_SSL,
    FED_SSL_FEDPROX,
    FEDERATED_ARMS,
    LOCAL_SSL,
    LOSO,
    POOLED,
    SCRATCH,
    CompareSpec,
)
from endofed.compare.units import (
    Site,
    UnitResult,
    federation_unit,
    fingerprint,
    label_subset,
    load_unit,
    local_unit,
    run_key,
    save_unit,
)
from endofed.config import ExperimentConfig, load_site_config, to_dict
from endofed.errors import ConfigError, DataError
from endofed.io.checkpoint import load_checkpoint
from endofed.training.cohort import label_of, load_cohort

LOGGER = logging.getLogger(__name__)
FEDERATION = "federation"
LOSO_FEDERATION = "loso_federation"  # the federation of the other sites (its own predictions are not an arm)


@dataclass(frozen=True)
class PlannedUnit:
    """One unit of work: ``arm`` for ``seed`` on ``sites`` (``fraction`` < 1: label-efficiency run)."""

    name: str
    arm: str
    seed: int
    sites: tuple[str, ...]
    fraction: float = 1.0


def _fraction_tag(fraction: float) -> str:
    return f"labels{round(fraction * 100):03d}"


def plan_units(spec: CompareSpec, site_names: Sequence[str]) -> list[PlannedUnit]:
    """Every unit of the experiment, in an order where each unit's inputs come first."""
    units: list[PlannedUnit] = []
    federated = any(a in spec.arms for a in FEDERATED_ARMS)
    for seed in spec.seeds:
        s = f"seed{seed}"
        for arm in (SCRATCH, LOCAL_SSL):
            if arm in spec.arms:
                units += [PlannedUnit(f"{s}/{arm}/{site}", arm, seed, (site,)) for site in site_names]
        if federated:
            units.append(PlannedUnit(f"{s}/{FEDERATION}", FED_SSL_FEDPROX, seed, tuple(site_names)))
        if FED_SSL in spec.arms:
            units += [PlannedUnit(f"{s}/{FED_SSL}/{site}", FED_SSL, seed, (site,)) for site in site_names]
        if POOLED in spec.arms:
            units.append(PlannedUnit(f"{s}/{POOLED}", POOLED, seed, tuple(site_names)))
        if LOSO in spec.arms:
            for site in site_names:
                others = tuple(n for n in site_names if n != site)
                units.append(PlannedUnit(f"{s}/{LOSO}/{FEDERATION}_without_{site}", LOSO_FEDERATION, seed, others))
                units.append(PlannedUnit(f"{s}/{LOSO}/{site}", LOSO, seed, (site,)))
        for fraction in spec.label_fractions:
            for arm in (SCRATCH, FED_SSL):
                if arm in spec.arms:
                    units += [
                        PlannedUnit(f"{s}/{_fraction_tag(fraction)}/{arm}/{site}", arm, seed, (site,), fraction)
                        for site in site_names
                    ]
    return units


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

    def resources(self) -> tuple[float, float]:
        """CPU and GPU share of each simulated site."""
        gpus = self.spec.gpus_per_site
        if gpus < 0:
            gpus = 1.0 / len(self.sites) if torch.cuda.is_available() else 0.0
        return self.spec.cpus_per_site, gpus


def _federated_encoder(ctx: Context, unit: PlannedUnit) -> dict[str, torch.Tensor]:
    """The pre-trained global encoder this unit fine-tunes: the seed's federation, or the one without the site."""
    folder = ctx.out / "units" / f"seed{unit.seed}"
    folder = folder / LOSO / f"{FEDERATION}_without_{unit.sites[0]}" if unit.arm == LOSO else folder / FEDERATION
    tensors, _ = load_checkpoint(folder / "global_encoder_pretrain.safetensors")
    return tensors


def _left_out(ctx: Context, unit: PlannedUnit) -> int:
    """Index of the site a leave-one-site-out federation leaves out (keeps run keys short and plain)."""
    return next(i for i, s in enumerate(ctx.sites) if s.name not in unit.sites)


def run_unit(ctx: Context, unit: PlannedUnit, on_federation: Callable[[Path], None] | None = None) -> UnitResult:
    """Run one unit (its inputs exist: see :func:`plan_units`)."""
    cfg = ctx.configs[unit.seed]
    folder = ctx.out / "units" / unit.name
    sites = [ctx.site(name) for name in unit.sites]
    if unit.arm in (FED_SSL_FEDPROX, LOSO_FEDERATION):
        suffix = "" if unit.arm == FED_SSL_FEDPROX else f"_{len(sites)}sites"
        config_yaml = ctx.out / "configs" / f"seed{unit.seed}{suffix}.yaml"
        key = run_key(ctx.out, unit.seed) + ("" if unit.arm == FED_SSL_FEDPROX else f"-without-{_left_out(ctx, unit)}")
        result = federation_unit(cfg, sites, folder, config_yaml, ctx.app_dir, key, ctx.resources(), on_federation)
    else:
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished attempt
        folder.mkdir(parents=True)
        dev = [label_subset(s, unit.fraction, unit.seed) for s in sites] if unit.fraction < 1 else None
        encoder = _federated_encoder(ctx, unit) if unit.arm in (FED_SSL, LOSO) else None
        result = local_unit(cfg, sites, unit.arm, folder, unit.arm in (LOCAL_SSL, POOLED), encoder, dev)
    result.name, result.arm, result.fraction = unit.name, unit.arm, unit.fraction
    return result


def prepare(spec: CompareSpec, site_yamls: Sequence[Path], out: Path, app_dir: Path, fresh: bool) -> Context:
    """Load configs and sites, and write the resolved experiment, configs and code version into ``out``."""
    if not site_yamls:
        raise ConfigError("no sites: give --sites or list them under 'sites' in the experiment YAML")
    if LOSO in spec.arms and len(site_yamls) < 3:
        raise ConfigError(f"arm 'loso' needs at least 3 sites (a federation of the others), got {len(site_yamls)}")
    configs = {seed: spec.experiment_config(seed, len(site_yamls)) for seed in spec.seeds}
    sites = load_sites(site_yamls, configs[spec.seeds[0]])
    if fresh and out.exists():
        shutil.rmtree(out / "units", ignore_errors=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for seed, cfg in configs.items():
        (out / "configs" / f"seed{seed}.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if LOSO in spec.arms:  # the federations of the other sites wait for one site fewer
            fewer = spec.experiment_config(seed, len(site_yamls) - 1)
            path = out / "configs" / f"seed{seed}_{len(site_yamls) - 1}sites.yaml"
            path.write_text(yaml.safe_dump(to_dict(fewer), sort_keys=False))
    resolved = to_dict(spec) | {"sites": [str(s.yaml) for s in sites], "code_version": code_version(app_dir)}
    (out / "experiment.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    return Context(spec, sites, out, app_dir, configs)


def run_all(
    ctx: Context,
    units: Sequence[PlannedUnit],
    on_unit: Callable[[PlannedUnit, UnitResult, bool], None] | None = None,
    before_unit: Callable[[PlannedUnit], None] | None = None,
    on_federation: Callable[[Path], None] | None = None,
) -> list[UnitResult]:
    """Run the units that have not finished yet; returns every unit's result, in plan order."""
    results = []
    for unit in units:
        cfg = ctx.configs[unit.seed]
        expected = fingerprint(cfg, ctx.sites, unit.name)
        folder = ctx.out / "units" / unit.name
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
