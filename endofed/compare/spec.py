"""The experiment of ``endofed compare``: which sites, arms, seeds and training budgets (one typed YAML).

Every arm gets the same budget per volume: ``pretrain_epochs`` MIM epochs over each volume it pre-trains on
(federated: ``pretrain_epochs / local_epochs`` rounds of ``local_epochs``), then ``finetune_epochs``
supervised epochs (federated fine-tuning: ``finetune_epochs / local_epochs`` rounds). The patient-level test
split of each site is fixed by ``split_seed`` and is the same for every arm and seed; the training seeds
change initialisation, shuffling, masks and augmentation only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endofed.compare.arms import ARM_NAMES, DEFAULT_ARMS, arm_names
from endofed.config import ExperimentConfig, build, load_config, read_yaml
from endofed.errors import ConfigError

ARMS = ARM_NAMES  # every known arm, in report order (endofed.compare.arms)


@dataclass(frozen=True)
class CompareSpec:
    """One comparison experiment (``configs/experiments/*.yaml``).

    Relative paths in the YAML (``config``, ``sites``) are relative to the YAML's own folder.
    """

    name: str = "experiment"  # names the run in the report
    config: Path = Path("../tiny.yaml")  # experiment config every arm uses (model, data, optimisers)
    overrides: tuple[str, ...] = ()  # section.key=value overrides of that config
    sites: tuple[Path, ...] = ()  # site YAMLs or folders of site_*.yaml (the command line may give them instead)
    arms: tuple[str, ...] = DEFAULT_ARMS  # arms to run, from ARMS (loso: one extra federation per site)
    seeds: tuple[int, ...] = (0,)  # training seeds; results are mean +- sd over them
    split_seed: int = 0  # seed of every site's patient-level test split (the same for all arms and seeds)
    pretrain_epochs: int = 4  # MIM epochs per volume, in every pre-training arm
    finetune_epochs: int = 4  # supervised epochs per labelled volume, in every arm
    local_epochs: int = 1  # local epochs per federated round (must divide both budgets)
    proximal_mu: float = 0.01  # FedProx mu of federated fine-tuning
    label_fractions: tuple[float, ...] = (0.25, 0.5)  # extra fine-tunes with fewer labels (scratch vs fed_ssl)
    bootstrap: int = 1000  # bootstrap resamples of the test patients for 95% CIs
    cpus_per_site: float = 1.0  # simulation: CPU share of each simulated site
    gpus_per_site: float = -1.0  # simulation: GPU share of each site (-1: 1/sites when CUDA is available, else 0)

    def __post_init__(self) -> None:
        known = arm_names()
        unknown = [a for a in self.arms if a not in known]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms must be distinct names from {known}, got {list(self.arms)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        for name in ("pretrain_epochs", "finetune_epochs", "local_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("pretrain_epochs", "finetune_epochs"):
            if getattr(self, name) % self.local_epochs:
                raise ConfigError(
                    f"{name} ({getattr(self, name)}) must be a multiple of local_epochs ({self.local_epochs}) "
                    "so that federated and local arms train for the same epochs per volume"
                )
        if any(not 0 < f < 1 for f in self.label_fractions):
            raise ConfigError(
                f"label_fractions must lie in (0, 1) (1 = every arm's own run), got {self.label_fractions}"
            )
        if self.split_seed < 0 or self.bootstrap < 0 or self.proximal_mu < 0 or self.cpus_per_site <= 0:
            raise ConfigError("split_seed, bootstrap and proximal_mu must be >= 0 and cpus_per_site > 0")
        if self.gpus_per_site < 0 and self.gpus_per_site != -1:
            raise ConfigError(f"gpus_per_site must be >= 0 or -1 (auto), got {self.gpus_per_site!r}")

    @property
    def pretrain_rounds(self) -> int:
        """Federated MIM rounds with the same epochs per volume as the local arms."""
        return self.pretrain_epochs // self.local_epochs

    @property
    def finetune_rounds(self) -> int:
        """Federated fine-tuning rounds with the same epochs per volume as the local arms."""
        return self.finetune_epochs // self.local_epochs

    def budget_overrides(self, seed: int, n_sites: int) -> list[str]:
        """Config overrides that give every arm of ``seed`` the experiment's budgets and split."""
        return [
            f"seed={seed}",
            f"finetune.split_seed={self.split_seed}",
            f"pretrain.epochs={self.pretrain_epochs}",
            f"finetune.epochs={self.finetune_epochs}",
            f"finetune.bootstrap={self.bootstrap}",
            f"federation.local_epochs={self.local_epochs}",
            f"federation.pretrain_rounds={self.pretrain_rounds}",
            f"federation.finetune_rounds={self.finetune_rounds}",
            "federation.strategy=fedavg",
            "federation.finetune_strategy=fedprox",
            f"federation.proximal_mu={self.proximal_mu}",
            f"federation.min_sites={n_sites}",
        ]

    def experiment_config(self, seed: int, n_sites: int) -> ExperimentConfig:
        """The experiment config of one seed (raises ConfigError naming a bad override)."""
        return load_config(self.config, [*self.overrides, *self.budget_overrides(seed, n_sites)])


def load_spec(path: Path, overrides: dict[str, Any] | None = None) -> CompareSpec:
    """Read an experiment YAML; relative paths become relative to its folder; ``overrides`` replace fields.

    Raises:
        ConfigError: missing file, unknown key (with a did-you-mean), or a bad value.
    """
    raw = read_yaml(path)
    spec = build(CompareSpec, raw, "experiment")
    base = Path(path).resolve().parent
    spec = dataclasses.replace(
        spec,
        config=spec.config if spec.config.is_absolute() else base / spec.config,
        sites=tuple(s if s.is_absolute() else base / s for s in spec.sites),
    )
    return dataclasses.replace(spec, **overrides) if overrides else spec
