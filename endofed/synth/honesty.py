"""Honesty checks of the synthetic benchmark: is the task hard in the right way?

Three baselines, each scored by cross-validated AUC with a logistic regression (scikit-learn):

* **global histograms**: per-modality intensity histograms of the model's input. If these separated the
  classes, the benchmark would be decodable from global statistics (scanner, contrast, body habitus).
* **oracle**: volumes of each finding type from the ground-truth maps. It confirms the signal exists.
* **candidate regions**: the ground-truth regions of *every* finding (signs and mimics, type hidden), each
  described only by its median T1 and/or T2 intensity. It measures how much each modality alone, and both
  together, tell a sign from a mimic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from endofed.config import DataConfig
from endofed.data.nifti import Volume
from endofed.data.preprocess import preprocess_case, resample_to_grid
from endofed.finetune.metrics import auc
from endofed.synth.anatomy import F

LEVELS = (0.5, 1.0)  # cut points of normalised intensity: low / mid / high (above the 95th percentile)
HISTOGRAM_TOP = 2.0  # histograms span [0, 2] of the normalised range; nothing above it is dropped
BASELINES = ("histogram", "oracle", "cand T1", "cand T2", "cand T1+T2")


def histogram_features(image: np.ndarray, mask: np.ndarray, bins: int = 32) -> np.ndarray:
    """Concatenated normalised intensity histograms of each channel over its valid voxels.

    Args:
        image: ``(C, X, Y, Z)`` normalised model input (mostly in [0, 1]; bright tissue and lesions above).
        mask: ``(C, X, Y, Z)`` validity masks.
        bins: bins per channel over [0, HISTOGRAM_TOP]; values above it count in the last bin.

    Returns:
        ``(C * bins,)`` densities (each channel's histogram sums to 1).
    """
    features = []
    for channel in range(image.shape[0]):
        values = np.clip(image[channel][mask[channel] > 0], 0.0, HISTOGRAM_TOP)
        counts, _ = np.histogram(values, bins=bins, range=(0.0, HISTOGRAM_TOP))
        features.append(counts / max(counts.sum(), 1))
    return np.concatenate(features).astype(np.float64)


def finding_volumes(findings: np.ndarray) -> np.ndarray:
    """Voxel count of each finding type (``F`` order, without NONE) in a ground-truth map."""
    return np.array([(findings == f).sum() for f in F if f != F.NONE], dtype=np.float64)


def candidate_intensities(image: np.ndarray, findings: np.ndarray, min_voxels: int = 2) -> list[tuple[float, float]]:
    """Median (T1, T2) of each connected region of the ground-truth findings, whatever its type.

    Args:
        image: ``(2, X, Y, Z)`` normalised model input (channel 0 = T1, 1 = T2).
        findings: ``(X, Y, Z)`` finding labels on the same grid.
        min_voxels: smaller regions are ignored (partial-volume specks).
    """
    regions, count = ndimage.label(findings > 0)
    out = []
    for index in range(1, count + 1):
        inside = regions == index
        if inside.sum() >= min_voxels:
            out.append((float(np.median(image[0][inside])), float(np.median(image[1][inside]))))
    return out


def _level(value: float) -> int:
    """0 / 1 / 2 for low / mid / high normalised intensity."""
    return int(np.searchsorted(LEVELS, value))


def bag_features(candidates: Sequence[tuple[float, float]], channels: Sequence[int]) -> np.ndarray:
    """Counts of candidate regions per intensity cell, using only the given channels (0 = T1, 1 = T2).

    With both channels: a 3 x 3 grid of (T1 level, T2 level); with one channel: its 3 levels.
    """
    cells = 3 ** len(channels)
    counts = np.zeros(cells)
    for candidate in candidates:
        cell = 0
        for channel in channels:
            cell = cell * 3 + _level(candidate[channel])
        counts[cell] += 1
    return counts


def cross_validated_auc(features: np.ndarray, labels: np.ndarray, seed: int, folds: int = 5) -> float:
    """AUC of out-of-fold probabilities of a standardised, L2-regularised logistic regression."""
    labels = np.asarray(labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")[:, 1]
    return auc(labels, scores)


def baseline_features(t1: Volume, t2: Volume, t2_findings: Volume, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Features of every baseline for one subject, computed on the model's input (preprocessed as training is).

    Args:
        t1: the T1 image as acquired.
        t2: the T2 image as acquired.
        t2_findings: the ground-truth finding map on the T2 grid.
        cfg: preprocessing settings (the ground truth is put on the same output grid, nearest neighbour).
    """
    pre = preprocess_case(t1, t2, cfg)
    findings = np.rint(resample_to_grid(t2_findings, pre.affine, cfg.roi_size, "nearest")).astype(np.uint8)
    candidates = candidate_intensities(pre.image, findings)
    return {
        "histogram": histogram_features(pre.image, pre.mask),
        "oracle": finding_volumes(findings),
        "cand T1": bag_features(candidates, [0]),
        "cand T2": bag_features(candidates, [1]),
        "cand T1+T2": bag_features(candidates, [0, 1]),
    }
