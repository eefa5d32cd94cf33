import pytest
import torch

from endofed.models.factory import build_mae
from endofed.models.patches import patchify
from endofed.ssl.masking import make_mask, num_visible
from tests.helpers import TINY_PATCH as PATCH
from tests.helpers import TINY_ROI as ROI

B, M, L = 3, 2, 8


def mask_for(seed: int = 0, mode: str = "independent") -> torch.Tensor:
    return make_mask(mode, B, M, L, 0.75, torch.Generator().manual_seed(seed), drop_prob=0.5)


@pytest.fixture()
def mae(tiny_cfg):
    return build_mae(tiny_cfg, ROI, generator=torch.Generator().manual_seed(0))


def test_prediction_shape(mae):
    pred = mae(torch.randn(B, M, *ROI), mask_for())
    assert pred.shape == (B, M * L, 256)


def test_encoder_sees_only_visible_tokens_and_decoder_sees_all(mae):
    seen: dict[str, int] = {}

    def record(name):
        return lambda module, args: seen.__setitem__(name, args[0].shape[1])

    mae.encoder.blocks[0].register_forward_pre_hook(record("encoder"))
    mae.encoder.norm.register_forward_pre_hook(record("encoder_norm"))
    mae.decoder_blocks[0].register_forward_pre_hook(record("decoder"))
    mae(torch.randn(B, M, *ROI), mask_for())
    assert seen == {"encoder": num_visible(M, L, 0.75), "encoder_norm": 4, "decoder": M * L}


def test_hidden_voxels_do_not_reach_the_model(mae):
    mae.eval()
    mask = mask_for(1, "modality_drop")
    x = torch.randn(B, M, *ROI)
    tokens = patchify(x, PATCH)
    noisy = torch.where(mask[..., None], tokens + 10 * torch.randn_like(tokens), tokens)
    x_changed = noisy.view(B, M, 2, 2, 2, 8, 8, 4).permute(0, 1, 2, 5, 3, 6, 4, 7).reshape(x.shape)
    assert not torch.equal(x, x_changed)
    assert torch.allclose(mae(x, mask), mae(x_changed, mask), atol=1e-6)


def test_known_visible_count_gives_the_same_result(mae):
    mae.eval()
    x, mask = torch.randn(B, M, *ROI), mask_for()
    assert torch.equal(mae(x, mask), mae(x, mask, num_visible(M, L, 0.75)))


def test_every_parameter_gets_a_gradient_in_pretraining(mae):
    x, mask = torch.randn(B, M, *ROI), mask_for()
    pred = mae(x, mask)
    (pred * mask[..., None]).square().mean().backward()  # only hidden tokens, as the real loss
    params = dict(mae.named_parameters())
    missing = [name for name, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert len(params) == sum(p.grad is not None for p in params.values())


def test_runs_under_bf16_autocast(mae):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = mae(torch.randn(B, M, *ROI), mask_for())
    assert pred.shape == (B, M * L, 256) and torch.isfinite(pred.float()).all()


def test_decoder_state_is_persistent_except_positions(mae):
    keys = set(mae.state_dict())
    assert "decoder_pos_embed" not in keys and "encoder.pos_embed" not in keys
    assert {"mask_token", "decoder_modality_embed", "decoder_pred.weight"} <= keys


def test_bad_mask_is_refused(mae):
    with pytest.raises(ValueError, match=r"\(3, 15\)"):
        mae(torch.randn(B, M, *ROI), torch.zeros(B, 15, dtype=torch.bool))
    ragged = mask_for()
    ragged[0, ~ragged[0]] = True  # row 0 hides everything
    with pytest.raises(ValueError, match="same number of visible tokens"):
        mae(torch.randn(B, M, *ROI), ragged)


def test_bad_decoder_arguments_are_refused(mae):
    from endofed.models.mae import MaskedAutoencoder3D

    with pytest.raises(ValueError, match="30"):
        MaskedAutoencoder3D(mae.encoder, decoder_dim=30, decoder_heads=4)
