"""The coordinator's ServerApp: two phases over Flower's round loop, encoder weights only.

Phase 1, federated MIM pre-training: ``federation.pretrain_rounds`` rounds of local MIM epochs at every site.
Phase 2, fine-tuning: ``federation.finetune_rounds`` federated rounds (with per-round test metrics of every
site), or, when that is 0, one evaluation round in which every site fine-tunes locally first.
The global encoder is checkpointed after every round (safetensors, the latest one per phase, with its model card:
``server/lineage.py``), each round is logged to ``rounds.jsonl``, and ``summary.json`` holds every site's final
test metrics. A phase in which no site update arrived raises, so the run ends ``failed`` instead of silently
keeping the initial weights.

After every round the server state is saved too (``server_state.safetensors``: phase, round, the float32 global
encoder, FedAdam's moments, the sites' num-examples claims, the int8 down-link's view). A run started with the
run-config key ``resume`` continues from it: the remaining rounds of the saved phase (with the round numbers, and
so the sites' schedules, of an uninterrupted run), then the next phase.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from endofed.config import ExperimentConfig, to_dict
from endofed.federated.downlink import DownLink
from endofed.federated.privacy import PrivacyLedger, check_privacy_plan
from endofed.federated.protocol import (
    ENCODER_KIND,
    FINETUNE,
    LOCAL_EPOCHS,
    PHASE,
    PHASES,
    PRETRAIN,
    ROUNDS_FILE,
    STATE_GLOBAL_PREFIX,
    SUMMARY_FILE,
    TOTAL_ROUNDS,
    global_encoder_file,
)
from endofed.federated.rounds import completed_rounds
from endofed.federated.runconfig import OUTPUT_DIR, RESUME, SIM_PARALLEL, SOURCE_DESCRIBE, experiment_config
from endofed.federated.weights import encoder_state
from endofed.io.checkpoint import config_hash, save_checkpoint
from endofed.io.jsonl import write_json
from endofed.io.server_state import ServerStateError, read_server_state, save_server_state_file
from endofed.io.tensorboard import TENSORBOARD_DIR, round_writer
from endofed.models import build_mae
from endofed.seeds import derive_seed
from server.lineage import CardWriter
from server.privacy import PrivateRounds, make_private
from server.strategies import RoundLogMixin, make_strategy
from server.stream import StreamingGrid, send_window

Strategy = RoundLogMixin | PrivateRounds  # a phase's strategy, under central DP or not

APP_DIR = Path(__file__).resolve().parents[1]
LOGGER = logging.getLogger(__name__)

app = ServerApp()


def _output_dir(context: Context) -> Path:
    """Where this run's checkpoints and logs go."""
    configured = str(context.run_config.get(OUTPUT_DIR, ""))
    return Path(configured) if configured else APP_DIR / "runs" / "federation" / f"run-{context.run_id}"


@dataclass(frozen=True)
class ServerState:
    """The server state after a completed round: enough to continue the run exactly.

    Attributes:
        phase: the phase of the round.
        round: its number within the phase.
        arrays: the float32 global encoder after it.
        strategy_arrays: the strategy's own arrays (FedAdam's moments), see ``RoundLogMixin.export_state``.
        strategy_meta: the strategy's own bookkeeping (claims, last evaluation).
    """

    phase: str
    round: int
    arrays: ArrayRecord
    strategy_arrays: dict[str, np.ndarray]
    strategy_meta: dict[str, Any]


def save_server_state(out: Path, phase: str, server_round: int, arrays: ArrayRecord, strategy: Strategy,
                      cfg_dict: dict[str, Any]) -> None:  # fmt: skip
    """Write ``server_state.safetensors`` + ``.json`` atomically, one hash over both (``endofed.io.server_state``)."""
    moments, meta = strategy.export_state()
    tensors = {f"{STATE_GLOBAL_PREFIX}{k}": torch.from_numpy(np.array(v.numpy())) for k, v in arrays.items()}
    tensors |= {k: torch.from_numpy(np.array(v)) for k, v in moments.items()}
    save_server_state_file(out, phase, server_round, tensors, meta, cfg_dict)


def load_server_state(out: Path, cfg_dict: dict[str, Any]) -> ServerState:
    """The state saved by the last completed round of the run in ``out``, after the checks of the pre-flight.

    Raises:
        RuntimeError: one line naming the file: no state was saved (no round completed), it was modified, cut
            short or torn (see ``endofed.io.server_state.read_server_state``), or it belongs to another config.
    """
    try:
        tensors, meta = read_server_state(out, cfg_dict)
    except ServerStateError as exc:
        raise RuntimeError(str(exc)) from None
    prefix = STATE_GLOBAL_PREFIX
    arrays = ArrayRecord({k.removeprefix(prefix): Array(v.numpy()) for k, v in tensors.items() if k.startswith(prefix)})
    others = {k: v.numpy() for k, v in tensors.items() if not k.startswith(prefix)}
    return ServerState(str(meta["phase"]), int(meta["round"]), arrays, others, dict(meta["strategy"]))


def _checkpointer(out: Path, phase: str, cfg: ExperimentConfig, strategy: Strategy,  # type: ignore[no-untyped-def]
                  cards: CardWriter | None = None):  # fmt: skip
    """``evaluate_fn`` hook: after every round, save the global encoder and its model card, then the server state.

    The encoder checkpoint overwrites the phase's previous one; the server state is the commit point of a round
    for ``--resume``.
    """
    cfg_dict = to_dict(cfg)

    def save(loop_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if loop_round > 0:
            server_round = loop_round + strategy.round_offset
            metadata = {"kind": ENCODER_KIND, "phase": phase, "round": server_round, "config": cfg_dict,
                        "config_hash": config_hash(cfg_dict)}  # fmt: skip
            path = save_checkpoint(out / global_encoder_file(phase), arrays.to_torch_state_dict(), metadata)
            if cards is not None:
                cards.checkpointed(path, phase, server_round, arrays, strategy)
            save_server_state(out, phase, server_round, arrays, strategy, cfg_dict)
        return None

    return save


def _phase(grid: Grid, strategy: Strategy, arrays: ArrayRecord, rounds: int, phase: str, cfg: ExperimentConfig,
           out: Path, cards: CardWriter | None = None, window: int = 0) -> ArrayRecord:  # fmt: skip
    """Run the remaining rounds of one phase (after ``strategy.round_offset`` done); returns the global encoder.

    ``window``: messages out at once (:func:`server.stream.send_window`; 0 = every site's at once).
    """
    fed = cfg.federation
    train_config = ConfigRecord({PHASE: phase, TOTAL_ROUNDS: rounds, LOCAL_EPOCHS: fed.local_epochs})
    aggregated_before = strategy.aggregated_rounds  # type: ignore[attr-defined]
    result = strategy.start(  # type: ignore[attr-defined]
        StreamingGrid(grid, window=window), arrays, num_rounds=rounds - strategy.round_offset,
        timeout=fed.round_timeout_s,
        train_config=train_config, evaluate_config=ConfigRecord({LOCAL_EPOCHS: 0}),
        evaluate_fn=_checkpointer(out, phase, cfg, strategy, cards),
    )  # fmt: skip
    # Counted by the strategy itself: Flower's Result.arrays is empty after total failure in 1.42 only.
    if strategy.aggregated_rounds == aggregated_before and rounds > strategy.round_offset:  # type: ignore[attr-defined]
        raise RuntimeError(f"{phase}: no round had a valid site update (all failed or were rejected: see rounds.jsonl)")
    return result.arrays if strategy.aggregated_rounds > aggregated_before else arrays  # type: ignore[attr-defined]


def _local_finetune_evaluation(grid: Grid, strategy: Strategy, arrays: ArrayRecord, cfg: ExperimentConfig,
                               window: int = 0) -> None:  # fmt: skip
    """One evaluation round in which each site fine-tunes the global encoder locally, then tests."""
    config = ConfigRecord({LOCAL_EPOCHS: cfg.finetune.epochs})
    messages = strategy.configure_evaluate(1, arrays, config, grid)  # type: ignore[attr-defined]
    replies = StreamingGrid(grid, window=window).send_and_receive(messages, timeout=cfg.federation.round_timeout_s)
    strategy.aggregate_evaluate(1, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Federated MIM pre-training, then federated (or local) fine-tuning, with checkpoints and logs."""
    started = time.perf_counter()
    cfg = experiment_config(context.run_config, APP_DIR)
    fed = cfg.federation
    out = _output_dir(context)
    resume = bool(context.run_config.get(RESUME, False))
    tensorboard = out / TENSORBOARD_DIR if cfg.logging.tensorboard else None  # rounds as TensorBoard scalars too
    writer = round_writer(out / ROUNDS_FILE, append=resume, tensorboard=tensorboard)
    check_privacy_plan(fed)  # a DP budget the planned rounds would exceed fails before any site is contacted
    ledger = PrivacyLedger.from_config(fed)  # one budget for both phases; None without DP
    saved = load_server_state(out, to_dict(cfg)) if resume else None
    source = str(context.run_config.get(SOURCE_DESCRIBE, "")) or None  # the launcher's git describe
    cards = CardWriter.start(
        out, grid, ledger, None if saved is None else saved.phase, source
    )  # every checkpoint's card
    if saved is None:
        model = build_mae(
            cfg.model, cfg.data.roi_size, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "global"))
        )
        arrays = ArrayRecord(encoder_state(model))
    else:
        arrays = saved.arrays
        writer.write({"event": "resume", "phase": saved.phase, "round": saved.round})
        LOGGER.info("resuming after %s round %d", saved.phase, saved.round)
    schedule = {PRETRAIN: fed.pretrain_rounds, FINETUNE: fed.finetune_rounds}
    downlink = DownLink()  # the int8 down-link's view, for both phases (used with transport delta_int8 only)
    window = send_window(fed.max_in_flight, int(str(context.run_config.get(SIM_PARALLEL, 0))))
    LOGGER.info("send window: %s", f"{window} sites at once" if window else "every site at once")
    for phase in PHASES:
        strategy = make_private(make_strategy(fed, phase, phase == FINETUNE, writer, downlink), fed, ledger)
        done = completed_rounds(PHASES, phase, schedule[phase], None if saved is None else (saved.phase, saved.round))
        if saved is not None and saved.phase == phase:
            strategy.restore_state(saved.strategy_arrays, saved.strategy_meta, done)
        if schedule[phase] > done:
            arrays = _phase(grid, strategy, arrays, schedule[phase], phase, cfg, out, cards, window)
    final = strategy  # the fine-tuning phase's
    if not fed.finetune_rounds:
        _local_finetune_evaluation(grid, final, arrays, cfg, window)
        cards.local_evaluation(out, arrays, final)  # the final encoder's card gets the sites' test metrics
    summary = {
        "finetune": "federated" if fed.finetune_rounds else "local",
        "strategy": fed.strategy,
        "finetune_strategy": fed.strategy if fed.finetune_strategy == "same" else fed.finetune_strategy,
        "rounds": {"pretrain": fed.pretrain_rounds, "finetune": fed.finetune_rounds},
        "sites": {str(node): metrics for node, metrics in final.last_evaluation.items()},
        "seconds": time.perf_counter() - started,
        "send_window": window,  # messages out at once (0 = every site's)
        "resumed_after": None if saved is None else {"phase": saved.phase, "round": saved.round},
    }
    write_json(out / SUMMARY_FILE, summary, strict=True)
    LOGGER.info("federated run finished: %s", summary)
