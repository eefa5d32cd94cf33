"""The arms of ``endofed compare``, in one registry: name, title, colour, how its units are planned and run.

Runner, tables, report and plots iterate over :data:`REGISTRY` (in report order), so adding an arm means
adding one :class:`Arm` here (and its test); see ``docs/extending.md``. An arm's *units* are its units of
work (one seed each); a unit may be an input of another (``fed_ssl`` fine-tunes the seed's federation), and
shared inputs are planned by every arm that needs them and run once (plans are de-duplicated by unit name).
Unit names are folder names under ``units/``: finished units are resumed by name, so they never change.

The arms, all evaluated on the same held-out test patients of every site:

* ``scratch`` and ``local_ssl``: one unit per site (site data only);
* ``fed_ssl`` and ``fed_ssl_fedprox``: one federated unit per seed (Flower simulation: FedAvg MIM rounds,
  then FedProx fine-tuning rounds; its predictions are the ``fed_ssl_fedprox`` arm's), then one local
  fine-tuning unit per site from the federated encoder (``fed_ssl``);
* ``pooled``: one unit per seed trained on every site's data, predicting every site's test patients;
* label efficiency: ``scratch`` and ``fed_ssl`` fine-tuned again on a share of each site's labels;
* ``loso`` (optional): per site, a federation of the *other* sites (FedAvg MIM), then local fine-tuning at
  the left-out site from that encoder: what a hospital gets from a federation it did not pre-train in.

This module is imported by the experiment spec (and so by ``endofed compare --help``): the training stack
(torch, Flower) is imported only inside the functions that run a unit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from endofed.federated.protocol import PRETRAIN, global_encoder_file

if TYPE_CHECKING:
    from endofed.compare.runner import Context
    from endofed.compare.units import UnitResult

SCRATCH, LOCAL_SSL, FED_SSL, FED_SSL_FEDPROX, POOLED = "scratch", "local_ssl", "fed_ssl", "fed_ssl_fedprox", "pooled"
LOSO = "loso"  # optional: leave-one-site-out
BASELINE = SCRATCH  # the arm gains are measured against
FEDERATION = "federation"
LOSO_FEDERATION = "loso_federation"  # the federation of the other sites (its own predictions are not an arm)

OnStart = Callable[[Path], None]
"""Called with the log file of a federated simulation when it starts."""

UnitRunner = Callable[["Context", "PlannedUnit", "OnStart | None"], "UnitResult"]
"""Trains one unit (its inputs exist) and returns what it recorded."""


@dataclass(frozen=True)
class PlannedUnit:
    """One unit of work: ``arm`` for ``seed`` on ``sites`` (``fraction`` < 1: label-efficiency run), run by ``run``."""

    name: str
    arm: str
    seed: int
    sites: tuple[str, ...]
    fraction: float = 1.0
    run: UnitRunner = field(kw_only=True, compare=False, repr=False)


Planner = Callable[["Arm", int, Sequence[str], float], list[PlannedUnit]]
"""``(arm, seed, site names, label fraction)`` -> the arm's units of that seed, each unit's inputs first."""


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison.

    Attributes:
        name: the arm's id (experiment YAML, ``--arms``, CSV ``arm`` column).
        title: one line for the report and figure legends.
        colour: its colour in every figure (matplotlib colour string).
        planner: plans the arm's units of one seed (see :meth:`plan`).
        run: trains one of the arm's own units (inputs it plans for other arms carry their own runner).
        default: whether the default experiment runs it.
        label_efficiency: whether it is fine-tuned again on each of the experiment's ``label_fractions``.
        min_sites: the fewest sites it can run with.
        questions: ``(baseline arm, what the comparison asks)`` for the report's generated summary.
    """

    name: str
    title: str
    colour: str
    planner: Planner
    run: UnitRunner
    default: bool = True
    label_efficiency: bool = False
    min_sites: int = 1
    questions: tuple[tuple[str, str], ...] = ()

    def plan(self, seed: int, sites: Sequence[str], fraction: float = 1.0) -> list[PlannedUnit]:
        """The arm's units for ``seed`` on ``sites`` (with ``fraction`` of the labels), inputs first."""
        return self.planner(self, seed, sites, fraction)


# --------------------------------------------------------------------------------------------------
# Running units
# --------------------------------------------------------------------------------------------------


def _federation_name(seed: int, left_out: str | None = None) -> str:
    """Unit name of the seed's federation of every site, or of every site but ``left_out``."""
    return f"seed{seed}/{FEDERATION}" if left_out is None else f"seed{seed}/{LOSO}/{FEDERATION}_without_{left_out}"


def _fresh_folder(ctx: Context, unit: PlannedUnit) -> Path:
    """The unit's folder, emptied of an unfinished attempt."""
    folder = ctx.unit_folder(unit)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _local_runner(pretrain: bool, encoder_of: Callable[[PlannedUnit], str] | None = None) -> UnitRunner:
    """Central training on the unit's sites: MIM first if ``pretrain``, or fine-tuning ``encoder_of``'s encoder."""

    def run(ctx: Context, unit: PlannedUnit, on_start: OnStart | None = None) -> UnitResult:
        from endofed.compare.units import label_subset, local_unit  # the training stack: only when a unit runs
        from endofed.io.checkpoint import load_checkpoint

        sites = ctx.sites_of(unit)
        folder = _fresh_folder(ctx, unit)
        dev = [label_subset(s, unit.fraction, unit.seed) for s in sites] if unit.fraction < 1 else None
        encoder = None
        if encoder_of is not None:
            encoder, _ = load_checkpoint(ctx.out / "units" / encoder_of(unit) / global_encoder_file(PRETRAIN))
        return local_unit(ctx.configs[unit.seed], sites, unit.arm, folder, pretrain, encoder, dev)

    return run


def _run_federation(ctx: Context, unit: PlannedUnit, on_start: OnStart | None = None) -> UnitResult:
    """A Flower simulation of the unit's sites: FedAvg MIM rounds, then FedProx fine-tuning rounds."""
    from endofed.compare.units import federation_unit, run_key  # the training stack: only when a unit runs

    sites = ctx.sites_of(unit)
    left_out = [i for i, s in enumerate(ctx.sites) if s.name not in unit.sites]  # keeps run keys short and plain
    key = run_key(ctx.out, unit.seed) + "".join(f"-without-{i}" for i in left_out)
    config_yaml = ctx.config_yaml(unit.seed, len(sites))
    folder = ctx.unit_folder(unit)
    return federation_unit(ctx.configs[unit.seed], sites, folder, config_yaml, ctx.app_dir, key, ctx.resources(),
                           on_start)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Planning units
# --------------------------------------------------------------------------------------------------


def _fraction_tag(fraction: float) -> str:
    """Folder of a label-efficiency run, e.g. ``labels050``."""
    return f"labels{round(fraction * 100):03d}"


def _per_site(arm: Arm, seed: int, sites: Sequence[str], fraction: float) -> list[PlannedUnit]:
    """One unit per site, trained on that site's data only."""
    prefix = f"seed{seed}" if fraction == 1.0 else f"seed{seed}/{_fraction_tag(fraction)}"
    return [
        PlannedUnit(f"{prefix}/{arm.name}/{site}", arm.name, seed, (site,), fraction, run=arm.run) for site in sites
    ]


def _federation(seed: int, sites: Sequence[str]) -> PlannedUnit:
    """The seed's federation of every site (its predictions are the ``fed_ssl_fedprox`` arm's)."""
    return PlannedUnit(_federation_name(seed), FED_SSL_FEDPROX, seed, tuple(sites), run=_run_federation)


def _plan_fed_ssl(arm: Arm, seed: int, sites: Sequence[str], fraction: float) -> list[PlannedUnit]:
    """The seed's federation, then local fine-tuning of its encoder at every site."""
    return [_federation(seed, sites), *_per_site(arm, seed, sites, fraction)]


def _plan_federation(arm: Arm, seed: int, sites: Sequence[str], fraction: float) -> list[PlannedUnit]:
    """The seed's federation alone."""
    return [_federation(seed, sites)]


def _plan_pooled(arm: Arm, seed: int, sites: Sequence[str], fraction: float) -> list[PlannedUnit]:
    """One unit trained on every site's data, predicting every site's test patients."""
    return [PlannedUnit(f"seed{seed}/{arm.name}", arm.name, seed, tuple(sites), run=arm.run)]


def _plan_loso(arm: Arm, seed: int, sites: Sequence[str], fraction: float) -> list[PlannedUnit]:
    """Per site: a federation of the other sites, then local fine-tuning of its encoder at the left-out site."""
    units = []
    for site in sites:
        others = tuple(s for s in sites if s != site)
        units.append(PlannedUnit(_federation_name(seed, site), LOSO_FEDERATION, seed, others, run=_run_federation))
        units.append(PlannedUnit(f"seed{seed}/{arm.name}/{site}", arm.name, seed, (site,), run=arm.run))
    return units


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------

REGISTRY: tuple[Arm, ...] = (
    Arm(SCRATCH, "single-site, from scratch", "#7f7f7f", _per_site, _local_runner(pretrain=False),
        label_efficiency=True),
    Arm(LOCAL_SSL, "single-site MIM -> fine-tune", "#1f77b4", _per_site, _local_runner(pretrain=True),
        questions=((SCRATCH, "Self-supervision at one site (local MIM vs scratch)"),)),
    Arm(FED_SSL, "federated MIM (FedAvg) -> local fine-tune", "#2ca02c", _plan_fed_ssl,
        _local_runner(pretrain=False, encoder_of=lambda u: _federation_name(u.seed)), label_efficiency=True,
        questions=((SCRATCH, "Federated self-supervision (federated MIM + local fine-tuning vs scratch)"),
                   (LOCAL_SSL, "Federating the pre-training (federated vs local MIM, both fine-tuned locally)"))),
    Arm(FED_SSL_FEDPROX, "federated MIM (FedAvg) -> federated fine-tune (FedProx)", "#d62728", _plan_federation,
        _run_federation, questions=((FED_SSL, "Federating the fine-tuning too (FedProx vs local fine-tuning)"),)),
    Arm(POOLED, "pooled (centralised) MIM + fine-tune", "#9467bd", _plan_pooled, _local_runner(pretrain=True),
        questions=((FED_SSL, "Pooling the data centrally (upper bound) vs federated MIM"),)),
    Arm(LOSO, "federated MIM without the site (leave-one-site-out) -> local fine-tune", "#8c564b", _plan_loso,
        _local_runner(pretrain=False, encoder_of=lambda u: _federation_name(u.seed, u.sites[0])), default=False,
        min_sites=3,
        questions=((SCRATCH, "A federation the site did not pre-train in (leave-one-site-out MIM vs scratch)"),)),
)  # fmt: skip
"""Every arm, in report order."""


def selected(names: Sequence[str] | None = None) -> list[Arm]:
    """The registered arms among ``names`` (every arm if None; unknown names are ignored), in report order."""
    return [arm for arm in REGISTRY if names is None or arm.name in names]


def get_arm(name: str) -> Arm:
    """The arm called ``name``.

    Raises:
        KeyError: naming the unknown arm and the known ones.
    """
    for arm in REGISTRY:
        if arm.name == name:
            return arm
    raise KeyError(f"unknown arm {name!r}; known arms: {[a.name for a in REGISTRY]}")


def arm_names() -> tuple[str, ...]:
    """Every arm's name, in report order."""
    return tuple(arm.name for arm in REGISTRY)


ARM_NAMES = arm_names()
DEFAULT_ARMS = tuple(arm.name for arm in REGISTRY if arm.default)
