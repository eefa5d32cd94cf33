"""The one typed configuration of endofed: frozen dataclasses, loaded from YAML in one place.

Two kinds of file exist:

* an **experiment config** (``configs/tiny.yaml``, ``configs/default.yaml``): how every site preprocesses,
  which model is trained and how. It must be identical at every site of a federation.
* a **site config** (``configs/sites/*.yaml``): where one hospital's data, work dir and credentials are
  (:mod:`endofed.site_config`, with the coordinator's server config; both re-exported here).

Both are parsed by the same strict builder (:mod:`endofed.config_builder`, re-exported here): unknown keys are
refused with a did-you-mean, every value is type-checked, and each dataclass validates its own ranges in
``__post_init__`` with a message naming the bad value. Defaults are reasoned fills (the seed paper's exact
settings are not public). The names of the mask modes and of the strategies come from pure modules
(:mod:`endofed.ssl.mask_modes`, :mod:`endofed.federated.strategies`): this module imports neither torch nor flwr.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from endofed.config_builder import apply_overrides, build, load_dataclass, read_yaml, to_dict
from endofed.config_builder import require as _require
from endofed.federated.strategies import SAME, STRATEGIES
from endofed.site_config import THREADS_ENV, ServerConfig, SiteConfig, load_server_config, load_site_config
from endofed.ssl.mask_modes import MASK_MODES

__all__ = [
    "INTERPOLATIONS",
    "MASK_MODES",
    "SPLITS",
    "THREADS_ENV",
    "STRATEGIES",
    "TRANSPORTS",
    "DataConfig",
    "ExperimentConfig",
    "FederationConfig",
    "FinetuneConfig",
    "LoggingConfig",
    "ModelConfig",
    "PretrainConfig",
    "ServerConfig",
    "SiteConfig",
    "apply_overrides",
    "build",
    "load_config",
    "load_server_config",
    "load_site_config",
    "read_yaml",
    "to_dict",
]

TRANSPORTS = ("fp32", "bf16", "delta_int8")
INTERPOLATIONS = ("linear", "bspline", "nearest")
PATCH_EMBEDS = ("linear", "mlp", "mlp_joint")  # patch embeddings of endofed.models.stem
POOLINGS = ("mean", "max")  # token pooling of the classifier head (endofed.models.classifier)
SPLITS = ("train", "val", "test")


def _positive(name: str, values: Sequence[float] | float) -> None:
    """Require every value to be > 0."""
    items = values if isinstance(values, Sequence) else (values,)
    _require(all(v > 0 for v in items), f"{name} must be > 0, got {values!r}")


@dataclass(frozen=True)
class DataConfig:
    """Preprocessing shared by every site (changing it invalidates the cache)."""

    target_spacing: tuple[float, float, float] = (1.0, 1.0, 3.0)  # mm (R, A, S); pelvic MRI is anisotropic
    roi_size: tuple[int, int, int] = (128, 128, 32)  # voxels after crop/pad, centred on the T2 field of view
    interpolation: str = "linear"  # image resampling: linear | bspline | nearest
    # The upper percentile sits below the top 5% so that a bright lesion (an endometrioma is ~0.5% of the ROI)
    # can neither move it nor be clipped: with (0.5, 99.5) and clipping, a T1-bright endometrioma became a
    # global intensity shift (docs/evidence-round2-notes.md).
    norm_percentiles: tuple[float, float] = (1.0, 95.0)  # robust range per channel -> [0, 1] (non-zero voxels)
    norm_clip: bool = False  # clip normalised intensities to [0, 1] (off: only below 0; bright lesions keep contrast)
    allow_missing_modality: bool = False  # accept cases with only T1 or only T2 (channel zero, mask zero)
    min_overlap_fraction: float = 0.05  # T1 must cover at least this fraction of the T2 grid (world coords)
    cache_dtype: str = "float32"  # dtype of cached volumes: float32 | float16
    # Input checks (refuse implausible or hostile source files before reading them; not part of the cache key)
    max_voxels: int = 2**28  # voxels a source volume (and the ROI, both channels) may have: 1 GiB as float32
    max_inflation: float = 100.0  # a .nii.gz may declare at most this many times its size (zip bombs)
    spacing_range_mm: tuple[float, float] = (0.05, 20.0)  # voxel size per axis (catches metres/microns)
    fov_range_mm: tuple[float, float] = (1.0, 2000.0)  # field of view per axis
    near_duplicate_correlation: float = 0.99  # warn when two cases' thumbnails correlate this much (0 = off)

    def __post_init__(self) -> None:
        _require(len(self.target_spacing) == 3, f"data.target_spacing needs 3 values, got {self.target_spacing!r}")
        _positive("data.target_spacing", self.target_spacing)
        _require(len(self.roi_size) == 3, f"data.roi_size needs 3 values, got {self.roi_size!r}")
        _positive("data.roi_size", self.roi_size)
        _require(
            self.interpolation in INTERPOLATIONS,
            f"data.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}",
        )
        lo, hi = self.norm_percentiles
        _require(0 <= lo < hi <= 100, f"data.norm_percentiles must satisfy 0 <= lo < hi <= 100, got {(lo, hi)!r}")
        _require(
            0 <= self.min_overlap_fraction <= 1,
            f"data.min_overlap_fraction must be in [0, 1], got {self.min_overlap_fraction!r}",
        )
        _require(
            self.cache_dtype in ("float32", "float16"),
            f"data.cache_dtype must be float32 or float16, got {self.cache_dtype!r}",
        )
        _positive("data.max_voxels", self.max_voxels)
        _positive("data.max_inflation", self.max_inflation)
        _require(
            self.near_duplicate_correlation <= 1,
            f"data.near_duplicate_correlation must be <= 1 (0 = off), got {self.near_duplicate_correlation!r}",
        )
        for name in ("spacing_range_mm", "fov_range_mm"):
            lo, hi = getattr(self, name)
            _require(0 < lo < hi, f"data.{name} must satisfy 0 < min < max, got {(lo, hi)!r}")
        lo, hi = self.spacing_range_mm
        _require(
            all(lo <= v <= hi for v in self.target_spacing),
            f"data.target_spacing must lie within data.spacing_range_mm = [{lo:g}, {hi:g}] mm, "
            f"got {tuple(self.target_spacing)!r}",
        )
        roi_voxels = 2 * math.prod(self.roi_size)  # T1 + T2 channels
        _require(
            roi_voxels <= self.max_voxels,
            f"data.roi_size {tuple(self.roi_size)!r} needs {roi_voxels:,} voxels for T1 + T2, above data.max_voxels "
            f"= {self.max_voxels:,} (a typo? the default ROI is 128 x 128 x 32)",
        )


@dataclass(frozen=True)
class ModelConfig:
    """ViT3D encoder (federated), MAE decoder and classification head (both stay at the site)."""

    patch_size: tuple[int, int, int] = (16, 16, 4)  # voxels per token: 128x128x32 -> 8x8x8 per modality
    embed_dim: int = 768  # encoder width
    depth: int = 12  # encoder blocks
    num_heads: int = 12  # encoder attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / embed_dim
    decoder_dim: int = 384  # MAE decoder width
    decoder_depth: int = 4  # MAE decoder blocks
    decoder_heads: int = 12  # MAE decoder attention heads
    num_classes: int = 2  # classification head outputs
    drop_path: float = 0.1  # stochastic depth rate (fine-tuning)
    patch_embed: str = "linear"  # linear (ViT) | mlp (patch-local MLP over stem_block sub-blocks, max+mean pooled)
    # | mlp_joint (mlp reading every modality at the token's location; needs pretrain.mask_mode=shared)
    stem_block: tuple[int, int, int] = (4, 4, 2)  # mlp patch embedding: voxels per sub-block (divides patch_size)
    stem_dim: int = 64  # mlp patch embedding: hidden width
    pooling: str = "mean"  # classifier head: mean | max over tokens (max: a finding in any one token counts)

    def __post_init__(self) -> None:
        _require(len(self.patch_size) == 3, f"model.patch_size needs 3 values, got {self.patch_size!r}")
        _positive("model.patch_size", self.patch_size)
        for name in ("embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth", "decoder_heads"):
            _positive(f"model.{name}", getattr(self, name))
        _require(
            self.embed_dim % self.num_heads == 0,
            f"model.embed_dim ({self.embed_dim}) must be divisible by model.num_heads ({self.num_heads})",
        )
        _require(
            self.decoder_dim % self.decoder_heads == 0,
            f"model.decoder_dim ({self.decoder_dim}) must be divisible by model.decoder_heads ({self.decoder_heads})",
        )
        _require(self.num_classes >= 2, f"model.num_classes must be >= 2, got {self.num_classes!r}")
        _require(0 <= self.drop_path < 1, f"model.drop_path must be in [0, 1), got {self.drop_path!r}")
        _require(
            self.patch_embed in PATCH_EMBEDS,
            f"model.patch_embed must be one of {PATCH_EMBEDS}, got {self.patch_embed!r}",
        )
        _require(self.pooling in POOLINGS, f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        _require(self.stem_dim > 0, f"model.stem_dim must be > 0, got {self.stem_dim!r}")
        _require(
            len(self.stem_block) == 3
            and len(self.patch_size) == 3
            and all(b > 0 and p % b == 0 for p, b in zip(self.patch_size, self.stem_block, strict=True)),
            f"model.stem_block {self.stem_block!r} must divide model.patch_size {self.patch_size!r} on every axis",
        )


@dataclass(frozen=True)
class PretrainConfig:
    """Masked image modelling (MAE-style) pre-training at one site."""

    epochs: int = 100  # local epochs (single-site) or total budget split over rounds (federated)
    batch_size: int = 8  # volumes per optimiser micro-batch
    accumulation_steps: int = 1  # micro-batches per optimiser step
    lr: float = 1.5e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_epochs: int = 5  # linear warm-up before the cosine decay
    mask_ratio: float = 0.75  # fraction of tokens hidden from the encoder
    mask_mode: str = "independent"  # shared | independent | modality_drop
    modality_drop_prob: float = 0.25  # with modality_drop: chance of hiding one modality whole
    compile: bool = False  # torch.compile the model (CUDA only)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulation_steps", "lr"):
            _positive(f"pretrain.{name}", getattr(self, name))
        _require(self.weight_decay >= 0, f"pretrain.weight_decay must be >= 0, got {self.weight_decay!r}")
        _require(self.warmup_epochs >= 0, f"pretrain.warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        _require(0 < self.mask_ratio < 1, f"pretrain.mask_ratio must be in (0, 1), got {self.mask_ratio!r}")
        _require(
            self.mask_mode in MASK_MODES,
            f"pretrain.mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}",
        )
        _require(
            0 <= self.modality_drop_prob <= 1,
            f"pretrain.modality_drop_prob must be in [0, 1], got {self.modality_drop_prob!r}",
        )


@dataclass(frozen=True)
class FinetuneConfig:
    """Supervised fine-tuning and evaluation of the endometriosis classifier."""

    epochs: int = 50  # local epochs
    batch_size: int = 8  # volumes per batch
    lr: float = 5e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_epochs: int = 5  # linear warm-up before the cosine decay
    layer_decay: float = 0.75  # layer-wise LR decay (1.0 = off)
    class_weighted: bool = True  # weight the loss by inverse class frequency
    augment: bool = True  # flips, small affine, intensity jitter
    flip_axes: tuple[int, ...] = (0, 1, 2)  # augmentation flips these axes (0 = left-right only is anatomical)
    max_rotation_deg: float = 10.0  # augmentation rotation about each axis, +- degrees (0 = none)
    test_fraction: float = 0.2  # held-out patient-level test split when the manifest gives none
    bootstrap: int = 1000  # bootstrap resamples for 95% CIs
    split_seed: int = -1  # seed of the patient-level test/val split (-1: the global seed)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr"):
            _positive(f"finetune.{name}", getattr(self, name))
        _require(0 < self.layer_decay <= 1, f"finetune.layer_decay must be in (0, 1], got {self.layer_decay!r}")
        _require(
            all(axis in (0, 1, 2) for axis in self.flip_axes) and len(set(self.flip_axes)) == len(self.flip_axes),
            f"finetune.flip_axes must be distinct axes among 0, 1, 2, got {self.flip_axes!r}",
        )
        _require(
            0 <= self.max_rotation_deg <= 45,
            f"finetune.max_rotation_deg must be in [0, 45], got {self.max_rotation_deg!r}",
        )
        _require(0 <= self.test_fraction < 1, f"finetune.test_fraction must be in [0, 1), got {self.test_fraction!r}")
        _require(self.bootstrap >= 0, f"finetune.bootstrap must be >= 0, got {self.bootstrap!r}")
        _require(
            self.split_seed >= -1, f"finetune.split_seed must be >= 0 (or -1: the global seed), got {self.split_seed!r}"
        )


@dataclass(frozen=True)
class FederationConfig:
    """The federated run: two phases (MIM pre-training rounds, then fine-tuning rounds)."""

    strategy: str = "fedavg"  # fedavg | fedprox | fedadam | trimmed_mean | median (the last two: robust)
    pretrain_rounds: int = 50  # federated MIM pre-training rounds
    finetune_rounds: int = 10  # federated fine-tuning rounds (0 = local-only fine-tuning)
    local_epochs: int = 1  # local epochs per round
    proximal_mu: float = 0.01  # FedProx mu (used by fedprox only)
    min_sites: int = 2  # sites required to start and in every round
    round_timeout_s: float = 3600.0  # a site that has not replied by then is dropped from the round
    finetune_strategy: str = "same"  # strategy of the fine-tuning phase: same (as strategy) or one of strategy's
    # Bounds on what a site may claim (docs/trust-bounds.md: ~20x and ~33x the largest honest values measured,
    # 0.0234 and 300, benchmarks/honest_bounds.py). 0 switches a bound off.
    max_update_norm_ratio: float = 0.5  # reject an update with ||w - w_global|| / ||w_global|| above this
    max_examples_per_site: int = 10_000  # reject a num-examples claim above this (it must not change per phase)
    # delta_int8: int8 deltas both ways (about a quarter of the fp32 bytes): down against the weights each site
    # received last round (endofed.federated.downlink), up against those it received; master weights stay fp32.
    transport: str = "fp32"  # encoder on the wire: fp32 | bf16 (half the bytes) | delta_int8 (int8 both ways)
    # trimmed_mean and median hold every site's update at once (the others add them up as they arrive)
    max_buffered_mb: int = 8_000  # refuse a trimmed_mean / median round needing more server memory (0 = no bound)
    # Replies faster than the server folds them wait unpulled in Flower, up to one per site; a window holds at most
    # this many, and starts the sites beyond it later (for very large federations). 0 = every site at once in a
    # deployment; in simulation one more than the sites the engine runs at once (server.stream.send_window).
    max_in_flight: int = 0  # sites sent a round's work at once (0 = the default above)
    # Dropout: a round starts once min_sites are connected, or after node_wait_s with at least quorum connected;
    # a round changes the global weights only with at least quorum valid updates (0 = quorum is min_sites).
    quorum: int = 0  # valid site updates a round needs to count (0 = min_sites)
    node_wait_s: float = 600.0  # how long a round waits for min_sites connected sites before going on with quorum
    # Central differential privacy (server-side fixed clipping, Gaussian noise, RDP accounting): off at 0.
    dp_noise_multiplier: float = 0.0  # noise std / clipping norm (0 = no DP)
    dp_clipping_norm: float = 0.0  # bound on each site's update norm ||w - w_global|| (needed with DP)
    dp_delta: float = 1e-5  # delta of the reported (epsilon, delta) budget
    dp_max_epsilon: float = 0.0  # stop releasing updates before epsilon would exceed this (0 = no cap)

    def __post_init__(self) -> None:
        _require(
            self.strategy in STRATEGIES,
            f"federation.strategy must be one of {STRATEGIES}, got {self.strategy!r}",
        )
        _require(
            self.finetune_strategy in (SAME, *STRATEGIES),
            f"federation.finetune_strategy must be 'same' or one of {STRATEGIES}, got {self.finetune_strategy!r}",
        )
        _require(
            self.pretrain_rounds >= 0,
            f"federation.pretrain_rounds must be >= 0, got {self.pretrain_rounds!r}",
        )
        _require(
            self.finetune_rounds >= 0,
            f"federation.finetune_rounds must be >= 0, got {self.finetune_rounds!r}",
        )
        _positive("federation.local_epochs", self.local_epochs)
        _require(self.proximal_mu >= 0, f"federation.proximal_mu must be >= 0, got {self.proximal_mu!r}")
        _positive("federation.min_sites", self.min_sites)
        _positive("federation.round_timeout_s", self.round_timeout_s)
        _require(
            self.max_update_norm_ratio >= 0 and self.max_examples_per_site >= 0 and self.max_buffered_mb >= 0,
            "federation.max_update_norm_ratio, max_examples_per_site and max_buffered_mb must be >= 0 (0 = off)",
        )
        _require(
            self.max_in_flight >= 0,
            f"federation.max_in_flight must be >= 0 (0 = the default window), got {self.max_in_flight!r}",
        )
        _require(
            self.transport in TRANSPORTS, f"federation.transport must be one of {TRANSPORTS}, got {self.transport!r}"
        )
        _require(
            0 <= self.quorum <= self.min_sites,
            f"federation.quorum must be between 0 (= min_sites) and min_sites ({self.min_sites}), got {self.quorum!r}",
        )
        _positive("federation.node_wait_s", self.node_wait_s)
        _require(
            self.dp_noise_multiplier >= 0 and self.dp_clipping_norm >= 0 and self.dp_max_epsilon >= 0,
            "federation.dp_noise_multiplier, dp_clipping_norm and dp_max_epsilon must be >= 0",
        )
        _require(0 < self.dp_delta < 1, f"federation.dp_delta must be in (0, 1), got {self.dp_delta!r}")
        _require(
            self.dp_noise_multiplier > 0 or self.dp_clipping_norm == 0,
            "federation.dp_clipping_norm is set but federation.dp_noise_multiplier is 0: set both for central DP",
        )
        if self.dp_noise_multiplier > 0:
            _require(
                self.dp_clipping_norm > 0,
                "federation.dp_clipping_norm must be > 0 when federation.dp_noise_multiplier is set",
            )
            _require(
                self.transport == "fp32",
                "federation.dp_noise_multiplier needs federation.transport=fp32 (updates are clipped as received)",
            )

    @property
    def round_quorum(self) -> int:
        """Valid updates a round needs (``quorum``, or ``min_sites`` when it is 0)."""
        return self.quorum or self.min_sites


@dataclass(frozen=True)
class LoggingConfig:
    """What a run writes for people to watch, besides its results (endofed.io.tensorboard)."""

    # Scalars as TensorBoard event files: the server's per round in <run>/tensorboard/, each site's per local epoch
    # in <work_dir>/federation/<run key>/tensorboard/ (and endofed pretrain/finetune: <out>/tensorboard/).
    tensorboard: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that must be the same at every site of one run."""

    seed: int = 0  # global seed; per-site/per-round seeds derive from it
    data: DataConfig = field(default_factory=DataConfig)  # preprocessing
    model: ModelConfig = field(default_factory=ModelConfig)  # networks
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # MIM pre-training
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # supervised fine-tuning
    federation: FederationConfig = field(default_factory=FederationConfig)  # federated schedule
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # TensorBoard event files (outputs only)

    def __post_init__(self) -> None:
        for axis, (roi, patch) in enumerate(zip(self.data.roi_size, self.model.patch_size, strict=True)):
            _require(
                roi % patch == 0,
                f"data.roi_size {self.data.roi_size!r} must be divisible by model.patch_size "
                f"{self.model.patch_size!r} (axis {axis})",
            )
        _require(
            self.model.patch_embed != "mlp_joint" or self.pretrain.mask_mode == "shared",
            "model.patch_embed=mlp_joint reads T1 and T2 at each token's location, so pre-training must hide "
            f"both together: set pretrain.mask_mode=shared (got {self.pretrain.mask_mode!r})",
        )


# --------------------------------------------------------------------------------------------------
# Loaders: YAML file + overrides -> validated config (the builder is endofed.config_builder).
# --------------------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load an experiment config from YAML (``None`` = all defaults) plus ``section.key=value`` overrides."""
    return load_dataclass(ExperimentConfig, path, overrides)
