"""FedAvg over the legacy workflow, with or without SecAgg+; writes round times and the aggregation error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

app = ServerApp()


class Timed(FedAvg):
    """FedAvg that remembers when each aggregation happened and the last aggregate."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.stamps: list[float] = [time.perf_counter()]
        self.last: list[np.ndarray] = []

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        """Aggregate as FedAvg, then note the time and keep the aggregate."""
        params, metrics = super().aggregate_fit(server_round, results, failures)
        self.stamps.append(time.perf_counter())
        if params is not None:
            self.last = parameters_to_ndarrays(params)
        return params, metrics


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds, then write the per-round times and the largest aggregation error."""
    cfg = context.run_config
    sites, rounds, size = int(cfg["sites"]), int(cfg["rounds"]), int(cfg["num-params"])
    start = [np.zeros(size, dtype=np.float32)]
    strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=sites, min_available_clients=sites,
                     initial_parameters=ndarrays_to_parameters(start))  # fmt: skip
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    fit = (
        SecAggPlusWorkflow(num_shares=sites, reconstruction_threshold=max(2, sites - 1), max_weight=100)
        if bool(cfg["secagg"])
        else None
    )
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    expected = rounds * np.mean([(k + 1) / 100 for k in range(sites)])
    error = float(np.max(np.abs(strategy.last[0] - expected))) if strategy.last else float("nan")
    result = {"round_seconds": list(np.diff(strategy.stamps)), "max_abs_error": error, "num_params": size}
    Path(str(cfg["result"])).write_text(json.dumps(result))
