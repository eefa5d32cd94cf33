"""Networks: the federated ViT3D encoder, the MAE (encoder + site-local decoder) and the classifier."""

from endofed.models.classifier import Classifier3D, modality_presence
from endofed.models.factory import build_classifier, build_encoder, build_mae, load_encoder
from endofed.models.mae import MaskedAutoencoder3D
from endofed.models.vit3d import ViT3D, gather_tokens

__all__ = [
    "Classifier3D",
    "MaskedAutoencoder3D",
    "ViT3D",
    "build_classifier",
    "build_encoder",
    "build_mae",
    "gather_tokens",
    "load_encoder",
    "modality_presence",
]
