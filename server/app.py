"""The coordinator's ServerApp: two phases over Flower's round loop, encoder weights only.

Phase 1, federated MIM pre-training: ``federation.pretrain_rounds`` rounds of local MIM epochs at every site.
Phase 2, fine-tuning: ``federation.finetune_rounds`` federated rounds (with per-round test metrics of every
site), or, when that is 0, one evaluation round in which every site fine-tunes locally first.
The global encoder is checkpointed after every round (safetensors, the latest one per phase), each round is
logged to ``rounds.jsonl``, and ``summary.json`` holds every site's final test metrics. A phase in which no
site update arrived raises, so the run ends ``failed`` instead of silently keeping the initial weights.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from endofed.config import ExperimentConfig, to_dict
from endofed.federated.runconfig import OUTPUT_DIR, experiment_config
from endofed.federated.weights import encoder_state
from endofed.io.checkpoint import config_hash, save_checkpoint
from endofed.models import build_mae
from endofed.training.cohort import derive_seed
from endofed.training.federated_site import FINETUNE, PRETRAIN
from endofed.training.records import JsonlWriter, write_results
from server.strategies import RoundLogMixin, make_strategy

APP_DIR = Path(__file__).resolve().parents[1]
LOGGER = logging.getLogger(__name__)

app = ServerApp()


def _output_dir(context: Context) -> Path:
    """Where this run's checkpoints and logs go."""
    configured = str(context.run_config.get(OUTPUT_DIR, ""))
    return Path(configured) if configured else APP_DIR / "runs" / "federation" / f"run-{context.run_id}"


def _checkpointer(out: Path, phase: str, cfg: ExperimentConfig):  # type: ignore[no-untyped-def]
    """``evaluate_fn`` hook: save the global encoder after every round (overwriting the phase's previous one)."""
    cfg_dict = to_dict(cfg)

    def save(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round > 0:
            metadata = {"kind": "global_encoder", "phase": phase, "round": server_round, "config": cfg_dict,
                        "config_hash": config_hash(cfg_dict)}  # fmt: skip
            save_checkpoint(out / f"global_encoder_{phase}.safetensors", arrays.to_torch_state_dict(), metadata)
        return None

    return save


def _phase(grid: Grid, strategy: RoundLogMixin, arrays: ArrayRecord, rounds: int, phase: str, cfg: ExperimentConfig,
           out: Path) -> ArrayRecord:  # fmt: skip
    """Run one phase of rounds; returns the final global encoder."""
    fed = cfg.federation
    train_config = ConfigRecord({"phase": phase, "total-rounds": rounds, "local-epochs": fed.local_epochs})
    result = strategy.start(  # type: ignore[attr-defined]
        grid, arrays, num_rounds=rounds, timeout=fed.round_timeout_s, train_config=train_config,
        evaluate_config=ConfigRecord({"local-epochs": 0}), evaluate_fn=_checkpointer(out, phase, cfg),
    )  # fmt: skip
    if not result.arrays:
        raise RuntimeError(f"{phase}: no site update was received in any round; see the SuperLink log")
    return result.arrays


def _local_finetune_evaluation(grid: Grid, strategy: RoundLogMixin, arrays: ArrayRecord, cfg: ExperimentConfig) -> None:
    """One evaluation round in which each site fine-tunes the global encoder locally, then tests."""
    config = ConfigRecord({"local-epochs": cfg.finetune.epochs})
    messages = strategy.configure_evaluate(1, arrays, config, grid)  # type: ignore[attr-defined]
    replies = grid.send_and_receive(messages, timeout=cfg.federation.round_timeout_s)
    strategy.aggregate_evaluate(1, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Federated MIM pre-training, then federated (or local) fine-tuning, with checkpoints and logs."""
    started = time.perf_counter()
    cfg = experiment_config(context.run_config, APP_DIR)
    fed = cfg.federation
    out = _output_dir(context)
    writer = JsonlWriter(out / "rounds.jsonl")
    model = build_mae(
        cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "global"))
    )
    arrays = ArrayRecord(encoder_state(model))
    if fed.pretrain_rounds:
        strategy = make_strategy(fed, PRETRAIN, evaluate=False, writer=writer)
        arrays = _phase(grid, strategy, arrays, fed.pretrain_rounds, PRETRAIN, cfg, out)
    final = make_strategy(fed, FINETUNE, evaluate=True, writer=writer)
    if fed.finetune_rounds:
        arrays = _phase(grid, final, arrays, fed.finetune_rounds, FINETUNE, cfg, out)
    else:
        _local_finetune_evaluation(grid, final, arrays, cfg)
    summary = {
        "finetune": "federated" if fed.finetune_rounds else "local",
        "strategy": fed.strategy,
        "finetune_strategy": fed.strategy if fed.finetune_strategy == "same" else fed.finetune_strategy,
        "rounds": {"pretrain": fed.pretrain_rounds, "finetune": fed.finetune_rounds},
        "sites": {str(node): metrics for node, metrics in final.last_evaluation.items()},
        "seconds": time.perf_counter() - started,
    }
    write_results(out / "summary.json", summary)
    LOGGER.info("federated run finished: %s", summary)
