"""The federation strategies endofed knows, by name, and which of them central DP may wrap (pure: no ``flwr``).

This is the one list of strategy names. The config validates ``federation.strategy`` and
``federation.finetune_strategy`` against it, the DP plan check (:func:`endofed.federated.privacy.check_privacy_plan`)
and the coordinator's DP wrapper read its DP flags, and the coordinator's registry (``server/strategies.py``,
``STRATEGY_CLASSES``) maps every name to its Flower strategy class; a test checks that the two agree.

DP-compatible means the strategy's aggregate is the mean of the site updates, the quantity the Gaussian noise
of central DP is calibrated for (FedAvg, FedProx). FedAdam's server step and the robust aggregates are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

FEDAVG, FEDPROX, FEDADAM, TRIMMED_MEAN, MEDIAN = "fedavg", "fedprox", "fedadam", "trimmed_mean", "median"
SAME = "same"  # federation.finetune_strategy: fine-tune with the pre-training strategy

# name -> DP-compatible (see the module docstring), in the order the docs list them
DP_COMPATIBLE: Mapping[str, bool] = MappingProxyType(
    {FEDAVG: True, FEDPROX: True, FEDADAM: False, TRIMMED_MEAN: False, MEDIAN: False}
)
STRATEGIES = tuple(DP_COMPATIBLE)
DP_STRATEGIES = tuple(name for name, compatible in DP_COMPATIBLE.items() if compatible)


def phase_strategy(strategy: str, finetune_strategy: str, finetune: bool) -> str:
    """The strategy a phase runs: ``finetune_strategy`` in the fine-tuning phase unless it is ``same``.

    Args:
        strategy: ``federation.strategy``.
        finetune_strategy: ``federation.finetune_strategy`` (a name or ``same``).
        finetune: whether the phase is fine-tuning.

    Returns:
        A name of :data:`STRATEGIES`.
    """
    return finetune_strategy if finetune and finetune_strategy != SAME else strategy
