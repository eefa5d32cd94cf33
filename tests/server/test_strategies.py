from __future__ import annotations

import pytest
from flwr.app import MetricRecord, RecordDict

from endofed.config import FederationConfig
from server.strategies import (
    LoggedFedAdam,
    LoggedFedAvg,
    LoggedFedProx,
    LoggedFedTrimmedAvg,
    average_metrics,
    make_strategy,
)


def test_metric_average_is_weighted_by_volumes_and_drops_the_site_tag():
    records = [
        RecordDict({"metrics": MetricRecord({"num-examples": 1, "train-loss": 2.0, "partition-id": 0})}),
        RecordDict({"metrics": MetricRecord({"num-examples": 3, "train-loss": 6.0, "partition-id": 1})}),
    ]
    averaged = average_metrics(records, "num-examples")
    assert dict(averaged) == {"train-loss": pytest.approx((1 * 2.0 + 3 * 6.0) / 4)}


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fedavg", LoggedFedAvg),
        ("fedprox", LoggedFedProx),
        ("fedadam", LoggedFedAdam),
        ("trimmed_mean", LoggedFedTrimmedAvg),
    ],
)
def test_make_strategy_waits_for_every_site(name, cls):
    strategy = make_strategy(FederationConfig(strategy=name, min_sites=3, proximal_mu=0.5), "pretrain", False, None)
    assert type(strategy) is cls
    assert strategy.min_train_nodes == 3 and strategy.min_available_nodes == 3  # type: ignore[attr-defined]
    assert strategy.fraction_evaluate == 0.0 and strategy.phase == "pretrain"  # type: ignore[attr-defined]
    if name == "fedprox":
        assert strategy.proximal_mu == 0.5  # type: ignore[attr-defined]


def test_finetune_phase_can_use_its_own_strategy():
    fed = FederationConfig(strategy="fedavg", finetune_strategy="fedprox", proximal_mu=0.25)
    assert type(make_strategy(fed, "pretrain", False, None)) is LoggedFedAvg
    finetune = make_strategy(fed, "finetune", True, None)
    assert type(finetune) is LoggedFedProx and finetune.proximal_mu == 0.25  # type: ignore[attr-defined]
    assert type(make_strategy(FederationConfig(strategy="fedadam"), "finetune", True, None)) is LoggedFedAdam


def test_bf16_wire_format_halves_bytes_and_decodes_to_float32():
    import numpy as np
    from flwr.app import Array, ArrayRecord

    from endofed.federated.bytes import state_nbytes
    from server.strategies import decode, encode

    values = np.linspace(-2, 2, 64, dtype=np.float32).reshape(8, 8)
    record = ArrayRecord({"w": Array(values)})
    wire = encode(record, "bf16")
    assert wire["w"].numpy().dtype == np.uint16 and wire["w"].numpy().shape == (8, 8)
    assert state_nbytes({"w": wire["w"].numpy()}) * 2 == state_nbytes({"w": values})
    back = decode(wire, "bf16")["w"].numpy()
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, values, rtol=2**-8)
    assert encode(record, "fp32") is record
