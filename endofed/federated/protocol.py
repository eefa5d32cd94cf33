"""The wire contract of a federated run, in one place: phases, message and metric keys, and the files written.

The ServerApp (``server/``), the ClientApp (``client/``), the site's federated driver
(:mod:`endofed.training.federated_site`), the launchers and ``endofed compare`` all name these constants instead
of repeating string literals, so a renamed key or file is one edit. The module is pure: no torch, no MONAI, no
``flwr`` (the ServerApp imports it without pulling in the site's training stack).

Messages (Flower ``RecordDict``): the server sends ``arrays`` (the encoder, in the transport codec) and
``config``; a site replies with ``arrays`` (train only) and ``metrics``. Nothing else crosses the wire.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------------- phases
PRETRAIN, FINETUNE = "pretrain", "finetune"
PHASES = (PRETRAIN, FINETUNE)  # in run order

# ---------------------------------------------------------------------------------------------------- records
ARRAYS, METRICS, CONFIG = "arrays", "metrics", "config"  # the RecordDict entries of a message

# ---------------------------------------------------------------------------------------------------- config keys
# (server -> site, in the ``config`` record)
PHASE = "phase"
SERVER_ROUND = "server-round"  # 1-based round within the phase (Flower's own key)
TOTAL_ROUNDS = "total-rounds"  # rounds of the phase: the sites' learning-rate schedule spans them
LOCAL_EPOCHS = "local-epochs"  # train: epochs this round; evaluate: > 0 = fine-tune locally first
PROXIMAL_MU = "proximal-mu"  # FedProx mu (Flower's own key); 0 or absent = FedAvg
TRANSPORT = "transport"  # codec of the arrays: fp32, bf16 or delta_int8 (endofed.federated.bytes)
DEFAULT_TRANSPORT = "fp32"
# int8 down-link (transport delta_int8, endofed.federated.downlink): each message's own codec and digests
DOWN_CODEC = "down-codec"  # delta_int8 (against the base below), or the full weights: bf16 (first round) or fp32
BASE_DIGEST = "base-digest"  # state_digest of the weights the delta is added to (a delta only)
VIEW_DIGEST = "view-digest"  # state_digest of the weights the site holds after decoding

# ---------------------------------------------------------------------------------------------------- metric keys
# (site -> server, in the ``metrics`` record; numbers only)
NUM_EXAMPLES = "num-examples"  # FedAvg weight: training volumes (train) or test patients (evaluate), not batches
TRAIN_LOSS = "train-loss"  # mean loss of the round's last local epoch
TRAIN_SECONDS = "train-seconds"
PARTITION_ID = "partition-id"  # simulation only: identifies the site in per-site records; never averaged
TIMING_PREFIX = "t-"  # where a site's time went in a round, in seconds:
T_STARTUP, T_SITE, T_DECODE, T_LOCAL, T_ENCODE = "t-startup", "t-site", "t-decode", "t-local", "t-encode"
TIMINGS = (T_STARTUP, T_SITE, T_DECODE, T_LOCAL, T_ENCODE)
# evaluate replies: a site's test metrics (endofed.finetune.metrics.METRIC_LABELS, in its order) + num-examples
EVALUATION_METRICS = ("auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "ece")
# train replies: the SHA-256 of the site's data passport (endofed.lineage.passport) as 8 ints of 32 bits each,
# most significant first (exact as int64 and as float64); identifies a site's data in the model card, never averaged
PASSPORT_SHA256_KEYS = tuple(f"passport-sha256-{i}" for i in range(8))

# ---------------------------------------------------------------------------------------------------- server files
# (in the run's output dir)
ROUNDS_FILE = "rounds.jsonl"  # one record per round and event (train, evaluate, privacy, resume)
SUMMARY_FILE = "summary.json"  # every site's final test metrics
STATE_FILE = "server_state.safetensors"  # the last completed round's server state (for --resume)
STATE_GLOBAL_PREFIX = "global."  # key prefix of the float32 global encoder in the state file
STATE_KIND, ENCODER_KIND = "server_state", "global_encoder"  # checkpoint metadata "kind"
RUN_LOG = "flwr-run.log"  # what ``flwr run`` / the simulation printed
CARD_MD_SUFFIX, CARD_JSON_SUFFIX = ".card.md", ".card.json"  # a global encoder's model card (endofed.lineage)


def global_encoder_file(phase: str) -> str:
    """File name of the global encoder after the last completed round of ``phase``."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return f"global_encoder_{phase}.safetensors"


# ---------------------------------------------------------------------------------------------------- site files
# (in ``<work_dir>/federation/<run key>/``; never sent anywhere)
SITE_STATE_DIR = "federation"  # under the site's work dir
SUBJECTS_FILE = "subjects.jsonl"  # which subjects trained each round (for audits and compare's leakage check)
OUTGOING_FILE = "outgoing.jsonl"  # what left the site, message by message (endofed.federated.audit)
MAE_STATE, CLASSIFIER_STATE = "mae", "classifier"  # site-local state files: <name>.safetensors
