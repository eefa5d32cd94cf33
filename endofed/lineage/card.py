"""The model card of a global encoder: built from the checkpoint's metadata and the run's lineage (pure).

A card is one dict, in the Hugging Face model-card metadata format: the standard keys first (``library_name``,
``license``, ``tags``, ``pipeline_tag``, ``model-index`` with the test metrics when known), then endofed's own:
``checkpoint`` (file, SHA-256 of the tensor file and of its metadata, phase, round), ``model`` (architecture,
tensors, parameters), ``software`` (endofed version, git describe, app bundle hash), ``config`` (hash and the
resolved config), ``federation`` (strategies, transport, rounds planned, completed and aggregated per phase),
``sites`` (node, simulation partition, passport SHA-256, volumes, rounds, last training loss per phase: no paths,
no site names, no subject ids), ``privacy`` (central DP: noise, clipping, delta, epsilon spent; ``null`` without),
``metrics`` (each site's test metrics when known), ``intended_use`` and ``limitations``, and ``card_sha256`` over
all the rest (canonical JSON). :func:`render_markdown` writes it as YAML front matter above a readable body; the
JSON file holds the same dict (:mod:`endofed.lineage.verify` writes both and checks them).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from endofed.federated.protocol import EVALUATION_METRICS, FINETUNE, NUM_EXAMPLES, PARTITION_ID, PHASES, PRETRAIN
from endofed.lineage.record import RunLineage

CARD_FORMAT = 1
CARD_HASH = "card_sha256"
CHECKPOINT_KEYS = ("kind", "phase", "round", "sha256", "metadata_sha256", "format_version", "created_utc")
TAGS = ("endofed", "federated-learning", "flower", "masked-image-modelling", "self-supervised", "3d", "mri",
        "vision-transformer", "endometriosis")  # fmt: skip
ARCHITECTURE = "ViT3D encoder (endofed.models.vit3d): per-modality patch embedding of T1 and T2, sin-cos 3D positions"
INTENDED_USE = (
    "A 3D vision-transformer encoder of T1 + T2 pelvic MRI, trained across the sites listed below without any "
    "image leaving a site ({how}). For research: initialise a site's endometriosis classifier from it "
    "('endofed finetune --init CHECKPOINT') and compare that with training from scratch on the same test patients "
    "('endofed compare'). Not a medical device; not for diagnosis or any clinical decision."
)
HOW = {
    PRETRAIN: "federated masked image modelling, no labels",
    FINETUNE: "federated masked image modelling, then federated fine-tuning with each site's own classification head",
}
LIMITATIONS = (
    "The coordinator never sees the sites' data, so this card cannot say whether it was endofed's synthetic "
    "benchmark or real MRI: compare each site's data passport with its SHA-256 below ('endofed data check' writes "
    "passport.json; endofed.lineage.passport.passport_sha256). Trained on the synthetic benchmark ('endofed synth': "
    "procedural pelvis phantoms), the encoder has learned phantoms: it is a software and method test bed, and its "
    "metrics say nothing about patients. Trained on real data, it reflects only these sites' scanners, protocols "
    "and populations; test metrics from few patients per site have wide confidence intervals; validate on your own "
    "data first. Without central DP (privacy: null) the weights carry no formal privacy guarantee."
)


@dataclass(frozen=True)
class CardFacts:
    """What the coordinator knows of a checkpoint beyond its metadata and the run's lineage.

    Attributes:
        tensors: tensors in the encoder state.
        parameters: their total number of elements.
        git_describe: ``git describe`` of endofed's source tree (``None`` outside a git checkout, as when the
            ServerApp runs from the installed app bundle: then the bundle's hash names the code).
        app_bundle_sha256: the Flower app bundle's hash (what ``endofed app hash`` prints), if known.
        epsilon: central DP: epsilon spent so far (``None`` without DP).
        releases: central DP: noisy releases so far.
        evaluation: node -> the site's latest test metrics (NaN = undefined on its test set).
        evaluation_source: how those metrics were obtained (one sentence).
    """

    tensors: int
    parameters: int
    git_describe: str | None = None
    app_bundle_sha256: str | None = None
    epsilon: float | None = None
    releases: int | None = None
    evaluation: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    evaluation_source: str = ""


def card_sha256(card: Mapping[str, Any]) -> str:
    """SHA-256 of a card's canonical JSON (every key but ``card_sha256``, sorted, compact, strict).

    Raises:
        ValueError: the card is not strict JSON.
    """
    body = {key: value for key, value in card.items() if key != CARD_HASH}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a model card must be strict JSON: {exc}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _finite(value: Any) -> Any:
    """A metric value as strict JSON: NaN/inf become ``None``."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def site_test_metrics(
    evaluation: Mapping[int, Mapping[str, float]], lineage: RunLineage, source: str
) -> dict[str, Any] | None:
    """The card's ``metrics``: each site's test metrics and their unweighted mean over sites (finite ones only)."""
    if not evaluation:
        return None
    sites = []
    for node, values in sorted(evaluation.items()):
        known = lineage.sites.get(str(node), {})
        partition = values.get(PARTITION_ID, known.get("partition_id"))
        row: dict[str, Any] = {"node": int(node), "partition_id": None if partition is None else int(partition)}
        row["test_patients"] = None if NUM_EXAMPLES not in values else int(values[NUM_EXAMPLES])
        row |= {name: _finite(values.get(name, math.nan)) for name in EVALUATION_METRICS}
        sites.append(row)
    mean = {}
    for name in EVALUATION_METRICS:
        finite = [row[name] for row in sites if row[name] is not None]
        mean[name] = sum(finite) / len(finite) if finite else None
    return {"test": {"source": source, "sites": sites, "mean_over_sites": mean}}


def _model_index(name: str, metrics: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Hugging Face ``model-index``: the mean test metrics over sites (empty without metrics)."""
    if metrics is None:
        return []
    mean = metrics["test"]["mean_over_sites"]
    values = [{"type": key, "value": value, "name": f"test {key}, mean over sites"} for key, value in mean.items()
              if value is not None]  # fmt: skip
    if not values:
        return []
    task = {"type": "image-classification", "name": "endometriosis classification (each site's own head)"}
    dataset = {"type": "site-test-splits", "name": "held-out test patients of the participating sites"}
    return [{"name": name, "results": [{"task": task, "dataset": dataset, "metrics": values}]}]


def _federation(fed: Mapping[str, Any], lineage: RunLineage) -> dict[str, Any]:
    """The card's ``federation`` section, from the resolved config and the lineage."""
    finetune = fed.get("finetune_strategy", "same")
    return {
        "strategy": fed.get("strategy"),
        "finetune_strategy": fed.get("strategy") if finetune == "same" else finetune,
        "finetune": "federated" if fed.get("finetune_rounds") else "local",
        "proximal_mu": fed.get("proximal_mu"),
        "transport": fed.get("transport"),
        "local_epochs": fed.get("local_epochs"),
        "rounds_planned": {PRETRAIN: fed.get("pretrain_rounds"), FINETUNE: fed.get("finetune_rounds")},
        "rounds_completed": {phase: lineage.rounds_completed.get(phase, 0) for phase in PHASES},
        "rounds_aggregated": {phase: lineage.rounds_aggregated.get(phase, 0) for phase in PHASES},
        "notes": list(lineage.notes),
    }


def _privacy(fed: Mapping[str, Any], facts: CardFacts) -> dict[str, Any] | None:
    """The card's ``privacy`` section: central DP settings and the budget spent, or ``None`` without DP."""
    if not float(fed.get("dp_noise_multiplier", 0.0)) > 0:
        return None
    return {
        "mechanism": "central DP at the coordinator: each site's update clipped, Gaussian noise on the sum",
        "noise_multiplier": fed.get("dp_noise_multiplier"),
        "clipping_norm": fed.get("dp_clipping_norm"),
        "delta": fed.get("dp_delta"),
        "max_epsilon": fed.get("dp_max_epsilon"),
        "epsilon": facts.epsilon,
        "releases": facts.releases,
    }


def _model(cfg: Mapping[str, Any], facts: CardFacts) -> dict[str, Any]:
    """The card's ``model`` section."""
    model, data = cfg.get("model", {}), cfg.get("data", {})
    keys = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "patch_embed")
    return {
        "architecture": ARCHITECTURE,
        "modalities": ["T1", "T2"],
        "roi_size": data.get("roi_size"),
        "target_spacing_mm": data.get("target_spacing"),
        **{key: model.get(key) for key in keys},
        "tensors": facts.tensors,
        "parameters": facts.parameters,
    }


def build_card(file_name: str, metadata: Mapping[str, Any], lineage: RunLineage, facts: CardFacts) -> dict[str, Any]:
    """The model card of one global encoder checkpoint.

    Args:
        file_name: the checkpoint's file name (no folder: a card names no path).
        metadata: the checkpoint's metadata record as written (:func:`endofed.io.checkpoint.save_checkpoint`:
            ``sha256``, ``metadata_sha256``, ``phase``, ``round``, ``config``, ``config_hash``, ...).
        lineage: the run's rounds and sites so far.
        facts: the rest (:class:`CardFacts`).

    Raises:
        ValueError: the metadata lacks the tensor file's hash, or something is not strict JSON.
    """
    if not isinstance(metadata.get("sha256"), str):
        raise ValueError(f"checkpoint {file_name} has no content hash: no card can vouch for it")
    cfg = metadata.get("config", {})
    phase = str(metadata.get("phase", ""))
    metrics = site_test_metrics(facts.evaluation, lineage, facts.evaluation_source)
    card: dict[str, Any] = {
        "library_name": "endofed",
        "license": "mit",
        "tags": list(TAGS),
        "pipeline_tag": "image-feature-extraction",
        "model-index": _model_index(file_name.split(".")[0], metrics),
        "endofed_card": CARD_FORMAT,
        "checkpoint": {key: metadata.get(key) for key in CHECKPOINT_KEYS} | {"file": file_name},
        "model": _model(cfg, facts),
        "software": {
            "endofed_version": metadata.get("endofed_version"),
            "git_describe": facts.git_describe,
            "app_bundle_sha256": facts.app_bundle_sha256,
        },
        "config": {"sha256": metadata.get("config_hash"), "resolved": cfg},
        "federation": _federation(cfg.get("federation", {}), lineage),
        "sites": lineage.site_list(),
        "privacy": _privacy(cfg.get("federation", {}), facts),
        "metrics": metrics,
        "intended_use": INTENDED_USE.format(how=HOW.get(phase, "federated training")),
        "limitations": LIMITATIONS,
    }
    card[CARD_HASH] = card_sha256(card)
    return card


def lineage_of(card: Mapping[str, Any]) -> RunLineage:
    """The run lineage a card records (a resumed run continues from it).

    Raises:
        ValueError: the card lacks the federation section or the sites.
    """
    fed = card.get("federation")
    if not isinstance(fed, Mapping):
        raise ValueError("the card has no federation section")
    return RunLineage.from_dict({"rounds_completed": fed.get("rounds_completed"),
                                 "rounds_aggregated": fed.get("rounds_aggregated"),
                                 "sites": card.get("sites"), "notes": fed.get("notes", [])})  # fmt: skip


def front_matter(card: Mapping[str, Any]) -> str:
    """The card as YAML front matter (between ``---`` lines), key order kept."""
    return "---\n" + yaml.safe_dump(dict(card), sort_keys=False, allow_unicode=True, width=120) + "---\n"


def _site_rows(card: Mapping[str, Any]) -> list[str]:
    """The body's table of sites."""
    lines = ["| node | partition | passport SHA-256 | volumes (pre-train / fine-tune) | rounds (pre-train / "
             "fine-tune) |", "|---|---|---|---|---|"]  # fmt: skip
    for site in card["sites"]:
        volumes = " / ".join(str(site["volumes"].get(p, "—")) for p in PHASES)
        rounds = " / ".join(str(site["rounds"].get(p, 0)) for p in PHASES)
        partition = "—" if site["partition_id"] is None else site["partition_id"]
        lines.append(f"| {site['node']} | {partition} | `{site['passport_sha256'] or 'not sent'}` | {volumes} | "
                     f"{rounds} |")  # fmt: skip
    return lines


def _metric_lines(card: Mapping[str, Any]) -> list[str]:
    """The body's test metrics, or a sentence saying there are none."""
    metrics = card.get("metrics")
    if not metrics:
        return ["No test metrics are known for this checkpoint (pre-training has none; see the final card)."]
    test = metrics["test"]

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [test["source"], "", "| node | test patients | " + " | ".join(EVALUATION_METRICS) + " |",
             "|---" * (len(EVALUATION_METRICS) + 2) + "|"]  # fmt: skip
    for row in test["sites"]:
        lines.append(f"| {row['node']} | {row['test_patients']} | "
                     + " | ".join(cell(row[m]) for m in EVALUATION_METRICS) + " |")  # fmt: skip
    lines.append("| mean over sites | | " + " | ".join(cell(test["mean_over_sites"][m]) for m in EVALUATION_METRICS)
                 + " |")  # fmt: skip
    return lines


def render_markdown(card: Mapping[str, Any]) -> str:
    """The ``.card.md`` text: YAML front matter (the whole card), then a readable summary of it."""
    ckpt, fed, model, software = card["checkpoint"], card["federation"], card["model"], card["software"]
    privacy = card.get("privacy")
    done = ", ".join(f"{p} {fed['rounds_completed'][p]} of {fed['rounds_planned'][p]}" for p in PHASES)
    dp = ("none (no formal privacy guarantee)" if privacy is None else
          f"central DP, noise multiplier {privacy['noise_multiplier']}, clipping norm {privacy['clipping_norm']}, "
          f"epsilon {privacy['epsilon']} at delta {privacy['delta']} after {privacy['releases']} releases")  # fmt: skip
    body = [
        f"# Global encoder `{ckpt['file']}` ({ckpt['phase']}, round {ckpt['round']})",
        "",
        f"- **SHA-256** of the tensor file: `{ckpt['sha256']}` (check: `endofed card verify {ckpt['file']}`)",
        f"- **Model**: {model['architecture']}; {model['embed_dim']} wide, {model['depth']} blocks, "
        f"{model['num_heads']} heads, patch {model['patch_size']}, ROI {model['roi_size']} voxels at "
        f"{model['target_spacing_mm']} mm; {model['parameters']} parameters in {model['tensors']} tensors",
        f"- **Code**: endofed {software['endofed_version']}, git describe {software['git_describe'] or 'unknown'}, "
        f"app bundle SHA-256 `{software['app_bundle_sha256'] or 'unknown'}` (`endofed app hash` in a checkout)",
        f"- **Config**: SHA-256 `{card['config']['sha256']}` (resolved config in the front matter)",
        f"- **Federation**: {fed['strategy']} pre-training, {fed['finetune']} fine-tuning ({fed['finetune_strategy']})"
        f", transport {fed['transport']}; rounds completed: {done}",
        f"- **Privacy**: {dp}",
        *[f"- **Note**: {note}" for note in fed["notes"]],
        "",
        "## Sites",
        "",
        "Each site is named by its Flower node id and the SHA-256 of its data passport (aggregate numbers only).",
        "",
        *_site_rows(card),
        "",
        "## Test metrics",
        "",
        *_metric_lines(card),
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Limitations",
        "",
        card["limitations"],
        "",
    ]
    return front_matter(card) + "\n" + "\n".join(body)
