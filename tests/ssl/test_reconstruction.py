import numpy as np
import torch

from endofed.config import ModelConfig, PretrainConfig
from endofed.io.figures import write_reconstruction_preview
from endofed.models.factory import build_mae
from endofed.models.patches import patchify
from endofed.ssl.loss import normalize_patches
from endofed.ssl.reconstruction import reconstruct_cases, reconstruction_preview

PATCH = (2, 2, 1)


def case():
    image = torch.randn(2, 4, 4, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(16, dtype=torch.bool)  # L = 2 * 2 * 2 = 8 per modality
    mask[[0, 3, 9, 14]] = True
    return image, mask


def test_perfect_prediction_reconstructs_the_input():
    image, mask = case()
    pred = normalize_patches(patchify(image[None], PATCH))[0]
    preview = reconstruction_preview(image, mask, pred, PATCH)
    assert set(preview) == {"input", "masked", "reconstruction", "hidden"}
    assert np.allclose(preview["reconstruction"], image.numpy(), atol=1e-5)
    assert np.array_equal(preview["input"], image.numpy())


def test_visible_patches_are_copied_and_hidden_ones_predicted():
    image, mask = case()
    preview = reconstruction_preview(image, mask, torch.zeros(16, 4), PATCH)
    hidden = preview["hidden"]
    assert hidden.shape == (2, 4, 4, 2) and hidden.sum() == 4 * 4
    assert hidden[0, 0, 0, 0] and not hidden[0, 0, 0, 1]  # token 0 = patch (0, 0, 0) of T1
    assert np.array_equal(preview["reconstruction"][~hidden], image.numpy()[~hidden])
    assert (preview["masked"][hidden] == 0).all()
    patch_means = image[0, 0:2, 0:2, 0].mean().item()  # zero prediction = the true patch mean
    assert np.allclose(preview["reconstruction"][0, 0:2, 0:2, 0], patch_means, atol=1e-6)


def test_reconstruct_cases_and_png(tmp_path):
    cfg = ModelConfig(
        patch_size=(8, 8, 4), embed_dim=24, depth=1, num_heads=2, decoder_dim=12, decoder_depth=1, decoder_heads=2
    )
    mae = build_mae(cfg, (16, 16, 8)).train()
    previews = reconstruct_cases(mae, torch.randn(2, 2, 16, 16, 8), PretrainConfig(), torch.Generator())
    assert len(previews) == 2 and previews[0]["reconstruction"].shape == (2, 16, 16, 8)
    assert mae.training  # restored
    path = write_reconstruction_preview([("case a", previews[0]), ("case b", previews[1])], tmp_path / "p" / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
