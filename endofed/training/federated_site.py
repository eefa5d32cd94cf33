"""One hospital's side of a federated run, free of Flower: local rounds on the shared encoder.

The ClientApp (``client/app.py``) only translates messages into calls of :class:`FederatedSite`. What the
site keeps to itself (the MAE decoder, the classification head, the optimisers' state) lives in the site's
work dir under ``federation/<run key>/`` as safetensors, so it survives between rounds and across a
SuperNode restart (every message starts a fresh ClientApp process in deployment). Only the encoder
weights named by the key policy (``endofed.federated.weights``) and scalar metrics go back to the server.

The site protects itself (:mod:`endofed.training.site_state`): every received encoder is checked (keys,
shapes, float32, finite, a norm bound against the last global it knows) before anything local is built or
written, local training that ends non-finite is refused, and each round's state is committed atomically, one
folder per round; a torn or unreadable round is passed over for the one before.

The held-out test patients of the site (``training.cohort``) are never used for training, in either phase.
Both phases train through :func:`endofed.training.engine.run_stage`, one call per round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from endofed.config import ExperimentConfig, SiteConfig
from endofed.data.loaders import SiteCases
from endofed.data.site import CaseResult
from endofed.errors import DataError
from endofed.federated.protocol import (
    CLASSIFIER_STATE,
    FINETUNE,
    MAE_STATE,
    NUM_EXAMPLES,
    PHASES,
    PRETRAIN,
    SITE_STATE_DIR,
    SUBJECTS_FILE,
    TRAIN_LOSS,
    TRAIN_SECONDS,
)
from endofed.federated.proximal import global_snapshot, proximal_term
from endofed.federated.weights import ENCODER_PREFIX, encoder_of, load_shared, shared_keys, shared_shapes
from endofed.finetune.metrics import binary_metrics
from endofed.io.jsonl import append_jsonl
from endofed.io.optim import optimizer_tensors
from endofed.io.tensorboard import TENSORBOARD_DIR, write_epochs
from endofed.models import Classifier3D, build_classifier, build_mae
from endofed.seeds import derive_seed
from endofed.training.cohort import load_cohort
from endofed.training.commits import PendingCommit
from endofed.training.device import resolve_device
from endofed.training.engine import Stage, StageResult, new_classifier, new_mae, predict_cases, run_stage
from endofed.training.local_state import LOCAL, OPTIM, LocalState, full_state, local_state
from endofed.training.received_checks import (
    check_received,
    dp_allowance,
    max_change_ratio,
    require_finite,
    rounds_apart,
)
from endofed.training.site_state import KnownGlobal, RoundStore

LOGGER = logging.getLogger(__name__)
# Site-local state files that keep a content hash: both, so that they need not be flushed to disk every round
# (0.4-0.5 s for ViT-B's 93 MB of decoder and moments here, hashing it twice 0.15 s; endofed.training.site_state).
HASHED_STATE = (MAE_STATE, CLASSIFIER_STATE)
# The state a round continued from is kept next to it (``<name>/round-NNNN/``, endofed.training.site_state): when
# the coordinator crashes after a site finished round k but before it received the reply, the resumed run repeats
# round k, and the site redoes it from its round k-1 state, exactly as the first time (endofed.federated.rounds).


@dataclass(frozen=True)
class RoundPlan:
    """What the server asks for in one round.

    Attributes:
        phase: ``pretrain`` (MIM) or ``finetune`` (supervised).
        server_round: 1-based round within the phase.
        total_rounds: rounds of the phase (the learning-rate schedule spans all of them).
        local_epochs: local epochs in this round.
        proximal_mu: FedProx ``mu`` (0 = FedAvg).
        received_digest: the received encoder's ``state_digest`` if already known (the int8 down-link checks
            it), so that the round's save need not hash it again.
    """

    phase: str
    server_round: int
    total_rounds: int
    local_epochs: int
    proximal_mu: float = 0.0
    received_digest: str | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        if not 1 <= self.server_round <= self.total_rounds or self.local_epochs < 1 or self.proximal_mu < 0:
            raise ValueError(f"bad round plan {self!r}")

    @property
    def first_epoch(self) -> int:
        """Index of this round's first epoch in the phase's schedule."""
        return (self.server_round - 1) * self.local_epochs


class FederatedSite:
    """A site's local training and evaluation on encoder weights sent by the server."""

    def __init__(self, site: SiteConfig, cfg: ExperimentConfig, run_key: str, allow_failures: bool = False,
                 defer_commit: bool = False) -> None:  # fmt: skip
        """``defer_commit``: commit each round's state after :meth:`train` returned (:mod:`~endofed.training.commits`).

        For a process that lives until :meth:`wait_for_commits` (deployment's ClientApp). Off, a round is committed
        before :meth:`train` returns.
        """
        if not run_key or not run_key.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"run key must be letters, digits, '-' or '_', got {run_key!r}")
        self.site, self.cfg = site, cfg
        self.cohort = load_cohort(site, cfg, allow_failures)
        self.device = resolve_device(site.device, site.cpu_threads)
        self.state_dir = site.work_dir / SITE_STATE_DIR / run_key
        self.stores = {name: RoundStore(self.state_dir / name, name in HASHED_STATE)
                       for name in (MAE_STATE, CLASSIFIER_STATE)}  # fmt: skip
        self.restored: dict[str, int | None] = {}  # per state: the round the last call continued from (logs, tests)
        self.expected = shared_shapes(cfg.model, cfg.data.roi_size)  # what a received encoder must be
        self.defer_commit = defer_commit
        self.pending: list[PendingCommit] = []  # deferred commits, oldest first

    def wait_for_commits(self) -> None:
        """Block until every deferred commit of this site has ended (one that failed is in the log)."""
        while self.pending:
            self.pending.pop(0).wait()

    # ------------------------------------------------------------------ local state on disk
    def _dp_ratio(self, known: Any) -> float:
        """What central DP noise (if the federation uses it) may add to the change bound, relative to ``known``."""
        fed = self.cfg.federation
        values = sum(math.prod(shape) for shape in self.expected.values())
        allowance = dp_allowance(fed.dp_noise_multiplier, fed.dp_clipping_norm, fed.round_quorum, values)
        if allowance == 0:
            return 0.0
        norm = math.sqrt(sum(float(np.sum(np.asarray(v, dtype=np.float64) ** 2)) for v in known.arrays.values()))
        return math.inf if norm == 0 else allowance / norm

    def check_received(self, shared: Mapping[str, Any], phase: str, server_round: int | None,
                       base: KnownGlobal | None = None) -> float | None:  # fmt: skip
        """Refuse a received encoder before it touches anything (:mod:`~endofed.training.received_checks`).

        The norm bound is against ``base`` (the kept global an int8 delta was decoded on, proven by the decoded
        digest) or else the newest global this site saved (fine-tuning first), scaled by the rounds between them;
        round 1 (none saved) gets every other check. ``server_round``: ``None`` for an evaluation.
        Returns the change ratio (``None`` without a reference).

        Raises:
            GlobalRefused: the encoder is refused; the site's local state is unchanged.
        """
        known = base or self.stores[CLASSIFIER_STATE].last_global() or self.stores[MAE_STATE].last_global()
        if known is None:
            return check_received(shared, self.expected)
        apart = rounds_apart((known.phase, known.server_round, known.total_rounds), phase, server_round)
        return check_received(shared, self.expected, known.arrays, max_change_ratio(apart, self._dp_ratio(known)))

    def _restore(self, name: str, server_round: int | None) -> LocalState | None:
        """The site-local weights and optimiser state that round ``server_round`` continues from, if any.

        That is the state saved by the newest earlier round (:func:`endofed.federated.rounds.site_state_to_resume`),
        so a repeated round (coordinator resumed after a crash) or a rejoining site continues correctly; an
        unreadable round is passed over for the one before (:meth:`RoundStore.load`). ``None``: the newest round.
        """
        found = self.stores[name].load(server_round, local_state)
        self.restored[name] = None if found is None else found[0]
        if found is not None:
            LOGGER.info("site %s: %s state continues from round %d", self.site.site_id, name, found[0])
        return None if found is None else found[1]

    def _log_subjects(self, phase: str, plan: RoundPlan, cases: Sequence[CaseResult]) -> None:
        """Record which subjects trained this round (site-local ``subjects.jsonl``; never sent anywhere).

        Lets an audit (and ``endofed compare``'s leakage check) confirm that no held-out test patient trained.
        """
        ids = sorted(r.case.subject_id for r in cases)
        append_jsonl(self.state_dir / SUBJECTS_FILE, {"phase": phase, "round": plan.server_round, "subjects": ids})

    def _save(self, model: nn.Module, optimizer: torch.optim.Optimizer, name: str, plan: RoundPlan,
              received: Mapping[str, Any]) -> None:  # fmt: skip
        """Save the site-local weights, their optimiser state and the received encoder after a round (atomically).

        **Only the site's own entries keep their AdamW moments across rounds** (decoder or head, and any encoder
        entry the key policy keeps local). The shared encoder's moments are not saved, so every round's AdamW
        starts them fresh (zero moments, step 0): the round begins at the received global, which is not the point
        whose gradients the site's moments averaged (the aggregate of every site's round), and the first moment
        is the site's own drift direction, which a persisted momentum would keep pushing after averaging has
        undone it (FedAvg's and FedOpt's clients keep no optimiser state between rounds). The decoder and head
        never leave the site and continue where they stopped, so their moments stay meaningful. The moments of
        the shared encoder were 0.69 GB of the 1.13 GB a ViT-B site wrote per round (local state + received
        global); 93 MB of decoder and its moments remain. A state saved before this rule (its ``optim.*`` include
        the encoder's) restores them once, as before.

        Raises:
            StateNotFinite: local training ended with NaN or Inf anywhere (encoder included): the round is refused
                and the state it continued from stays the newest.
        """
        state = model.state_dict()
        shared = {f"{ENCODER_PREFIX}{k}" for k in shared_keys(model)}
        require_finite({k: state[k] for k in shared}, "trained encoder")
        tensors = {f"{LOCAL}{k}": v for k, v in state.items() if k not in shared}
        own = [p for n, p in model.named_parameters() if n not in shared]  # what continues at the site
        optim, meta = optimizer_tensors(optimizer, params=own)
        tensors.update({f"{OPTIM}{k}": v for k, v in optim.items()})
        args = ((plan.phase, plan.server_round, plan.total_rounds), tensors, {"optimizer": meta}, received)
        store, base = self.stores[name], self.restored.get(name)
        if self.defer_commit:
            self.pending.append(store.save_later(*args, base=base, digest=plan.received_digest))
        else:
            store.save(*args, base=base, digest=plan.received_digest)

    # ------------------------------------------------------------------ rounds
    def train(
        self, shared: Mapping[str, Any], plan: RoundPlan, base: KnownGlobal | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
        """Run one round: check and load the global encoder, train locally, return the new encoder and metrics.

        ``base``: the kept global an int8 delta was decoded on (:meth:`check_received`).

        Raises:
            GlobalRefused: the received encoder fails the site's checks (nothing local was touched).
            StateNotFinite: local training ended non-finite (nothing of the round was saved).
        """
        self.check_received(shared, plan.phase, plan.server_round, base)
        result, volumes = (self._pretrain if plan.phase == PRETRAIN else self._finetune)(shared, plan)
        history = result.history
        metrics: dict[str, float | int] = {
            NUM_EXAMPLES: volumes,
            TRAIN_LOSS: float(history[-1]["loss"]),
            TRAIN_SECONDS: float(sum(h["seconds"] for h in history)),
        }
        return self._trained_encoder(result.model), metrics

    @staticmethod
    def _trained_encoder(model: nn.Module) -> dict[str, torch.Tensor]:
        """The trained shared entries for the reply: :func:`~endofed.federated.weights.encoder_state`, uncopied.

        The model is dropped once the round is saved, so a float32 CPU model's weights go out as they are (a copy
        would cost 0.35 GB of memory traffic per ViT-B round); on another device or dtype they are converted.
        """
        live = encoder_of(model).state_dict()
        return {k: live[k].detach().to(device="cpu", dtype=torch.float32) for k in shared_keys(model)}

    @staticmethod
    def _regulariser(encoder: nn.Module, mu: float) -> Callable[[], torch.Tensor] | None:
        """FedProx's proximal term over the encoder, against a detached copy of the received weights."""
        if mu <= 0:
            return None
        snapshot = global_snapshot(encoder)
        return lambda: proximal_term(encoder, snapshot, mu)

    def _stage(self, phase: str, cases: list[CaseResult], plan: RoundPlan) -> Stage:
        """This round's place in the phase's schedule (rounds x local epochs), on the site's own cases."""
        return Stage(
            phase, [SiteCases(self.site, cases)], self.site.site_id, plan.total_rounds * plan.local_epochs,
            first_epoch=plan.first_epoch, num_epochs=plan.local_epochs, server_round=plan.server_round,
        )  # fmt: skip

    def _round(self, model: nn.Module, name: str, phase: str, cases: list[CaseResult], plan: RoundPlan,
               saved: LocalState | None, received: Mapping[str, Any]) -> StageResult:  # fmt: skip
        """Train one round through the engine, then save the site-local state and the subjects that trained.

        Once the round is committed, its epochs' loss and lr go to the site's TensorBoard folder
        (``logging.tensorboard``), at each epoch's index in the phase's schedule; a refused round leaves none.
        """
        result = run_stage(
            model, self._stage(phase, cases, plan), self.cfg, self.device,
            optimizer_state=None if saved is None else (saved.optimizer, saved.optimizer_meta),
            regulariser=self._regulariser(model.encoder, plan.proximal_mu),  # type: ignore[arg-type]
        )  # fmt: skip
        self._save(model, result.optimizer, name, plan, received)
        self._log_subjects(phase, plan, cases)
        if self.cfg.logging.tensorboard:
            write_epochs(self.state_dir / TENSORBOARD_DIR, phase, result.history)
        return result

    def _pretrain(self, shared: Mapping[str, Any], plan: RoundPlan) -> tuple[StageResult, int]:
        cases = self.cohort.pretrain_cases()
        saved = self._restore(MAE_STATE, plan.server_round)
        if saved is None:  # first round: the site's seeded decoder init (the random encoder is overwritten)
            model = new_mae(self.cfg, derive_seed(self.cfg.seed, self.site.site_id, "mae"))
            load_shared(model, shared)
        else:  # no random init at all: the encoder is the server's, the decoder the site's own
            model = build_mae(self.cfg.model, self.cfg.data.roi_size, state=full_state(shared, saved.weights))
        return self._round(model, MAE_STATE, PRETRAIN, cases, plan, saved, shared), len(cases)

    def _finetune(self, shared: Mapping[str, Any], plan: RoundPlan) -> tuple[StageResult, int]:
        cases = self.cohort.dev_cases()
        if not cases:
            raise DataError(f"site {self.site.site_id!r} has no labelled development case to fine-tune on")
        saved = self._restore(CLASSIFIER_STATE, plan.server_round)
        model = self._classifier(shared, None if saved is None else saved.weights)
        return self._round(model, CLASSIFIER_STATE, FINETUNE, cases, plan, saved, shared), len(cases)

    def _classifier(self, shared: Mapping[str, Any], local: Mapping[str, torch.Tensor] | None = None) -> Classifier3D:
        """A classifier with the shared encoder and the site's saved head (``local``) or its fixed initial head."""
        if local is not None:  # no random init: the encoder is the server's, the head the site's own
            return build_classifier(self.cfg.model, self.cfg.data.roi_size, state=full_state(shared, local))
        model = new_classifier(self.cfg, derive_seed(self.cfg.seed, self.site.site_id, "classifier"))
        load_shared(model, shared)
        return model

    def _trained_classifier(self, shared: Mapping[str, Any]) -> Classifier3D:
        """The global encoder with the head of the last federated fine-tuning round (else the fixed initial head)."""
        saved = self.saved_state(CLASSIFIER_STATE)  # hash verified (HASHED_STATE)
        return self._classifier(shared, None if saved is None else saved.weights)

    def saved_state(self, name: str) -> LocalState | None:
        """The newest readable local state ``name`` (``mae`` or ``classifier``) saved by any round (``None``: none)."""
        return self._restore(name, None)

    def test_predictions(
        self, shared: Mapping[str, Any], local_epochs: int = 0, base: KnownGlobal | None = None
    ) -> tuple[list[CaseResult], np.ndarray]:
        """The site's labelled held-out test patients and their probabilities under the global encoder + head.

        With ``local_epochs > 0`` the head and encoder are first fine-tuned locally for that many epochs
        (federated pre-training followed by local fine-tuning); otherwise the head saved by the last
        federated fine-tuning round is used. Both stay at the site.

        Raises:
            GlobalRefused: the received encoder fails the site's checks (nothing local was touched).
        """
        self.check_received(shared, FINETUNE, None, base)
        if local_epochs > 0:
            model = self._finetune(shared, RoundPlan(FINETUNE, 1, 1, local_epochs))[0].model
        else:
            model = self._trained_classifier(shared)
        test = self.cohort.test_cases()
        if not test:
            raise DataError(f"site {self.site.site_id!r} has no labelled test patient", "too_few_cases")
        probs = predict_cases(model, SiteCases(self.site, test), self.cfg.finetune.batch_size, self.device)  # type: ignore[arg-type]
        return test, probs

    def evaluate(
        self, shared: Mapping[str, Any], local_epochs: int = 0, base: KnownGlobal | None = None
    ) -> dict[str, float | int]:
        """Metrics of :meth:`test_predictions` (numbers only: what the server may see)."""
        test, probs = self.test_predictions(shared, local_epochs, base)
        labels = np.array(SiteCases(self.site, test).labels)
        metrics: dict[str, float | int] = {k: float(v) for k, v in binary_metrics(labels, probs).items()}
        metrics[NUM_EXAMPLES] = len(test)
        return metrics
