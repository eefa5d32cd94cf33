import math

import pytest
import torch
from torch import nn

from endofed.models.blocks import DropPath, sincos_position_embedding_3d
from endofed.models.vit3d import ViT3D, gather_tokens
from tests.helpers import TINY_PATCH as PATCH
from tests.helpers import TINY_ROI as ROI


def encoder(**kwargs) -> ViT3D:
    args = {"embed_dim": 48, "depth": 2, "num_heads": 4, "generator": torch.Generator().manual_seed(0)}
    return ViT3D(ROI, PATCH, **(args | kwargs))


def test_output_shapes():
    enc = encoder()
    x = torch.randn(3, 2, *ROI)
    assert (enc.grid, enc.tokens_per_modality, enc.num_tokens, enc.patch_voxels) == ((2, 2, 2), 8, 16, 256)
    assert enc.embed(x).shape == (3, 16, 48)
    assert enc(x).shape == (3, 16, 48)
    assert enc(x, keep_idx=torch.tensor([[0, 9]] * 3)).shape == (3, 2, 48)


def test_anisotropic_roi_and_patch():
    enc = ViT3D((32, 16, 12), (16, 8, 3), embed_dim=24, depth=1, num_heads=2)
    assert enc.grid == (2, 2, 4)
    assert enc(torch.zeros(1, 2, 32, 16, 12)).shape == (1, 32, 24)


def test_stable_state_dict_keys():
    keys = list(encoder(depth=1).state_dict())
    block = [
        f"blocks.0.{name}.{p}"
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias")
    ]
    expected = ["modality_embed"] + [f"patch_embed.{m}.{p}" for m in (0, 1) for p in ("weight", "bias")]
    assert sorted(keys) == sorted(expected + block + ["norm.weight", "norm.bias"])


def test_position_embedding_is_a_fixed_non_persistent_buffer():
    enc = encoder()
    assert "pos_embed" in dict(enc.named_buffers())
    assert "pos_embed" not in enc.state_dict()
    assert all(p is not enc.pos_embed for p in enc.parameters())
    assert enc.pos_embed.shape == (8, 48)
    assert torch.equal(enc.pos_embed, sincos_position_embedding_3d((2, 2, 2), 48))
    assert enc.to(torch.float64).pos_embed.dtype == torch.float64  # follows the module


def test_state_dict_does_not_depend_on_the_roi():
    small, large = encoder(), ViT3D((32, 32, 16), PATCH, embed_dim=48, depth=2, num_heads=4)
    large.load_state_dict(small.state_dict(), strict=True)


def test_sincos_hand_checked():
    table = sincos_position_embedding_3d((2, 1, 2), 13)  # F = 2 frequencies: omega = [1, 1e-2]; 1 zero channel
    row = table[3]  # grid (x=1, y=0, z=1), C order: (1 * 1 + 0) * 2 + 1
    s, c = math.sin, math.cos
    expected = [s(1), s(0.01), c(1), c(0.01), 0, 0, 1, 1, s(1), s(0.01), c(1), c(0.01), 0]
    assert row.tolist() == pytest.approx(expected, abs=1e-7)
    with pytest.raises(ValueError, match="5"):
        sincos_position_embedding_3d((2, 2, 2), 5)


def test_gather_tokens_hand_checked():
    tokens = torch.arange(12.0).view(2, 3, 2)
    out = gather_tokens(tokens, torch.tensor([[2, 0], [1, 1]]))
    assert out.tolist() == [[[4.0, 5.0], [0.0, 1.0]], [[8.0, 9.0], [8.0, 9.0]]]


def test_forward_on_visible_tokens_matches_the_two_step_api():
    enc = encoder().eval()
    x = torch.randn(2, 2, *ROI)
    keep = torch.tensor([[1, 4, 9], [0, 8, 15]])
    expected = enc.forward_tokens(gather_tokens(enc.embed(x), keep))
    assert torch.allclose(enc(x, keep_idx=keep), expected)


def test_key_mask_hides_a_modality():
    enc = encoder().eval()
    x = torch.randn(1, 2, *ROI)
    changed = x.clone()
    changed[:, 0] += 3.0  # T1 changes
    only_t2 = torch.tensor([[False] * 8 + [True] * 8])
    out, out_changed = enc(x, key_mask=only_t2), enc(changed, key_mask=only_t2)
    assert torch.allclose(out[:, 8:], out_changed[:, 8:], atol=1e-5)
    assert not torch.allclose(out[:, :8], out_changed[:, :8], atol=1e-3)


def test_drop_path_is_identity_when_zero_and_increases_over_depth():
    assert all(isinstance(b.drop_path1, nn.Identity) for b in encoder().blocks)
    blocks = encoder(depth=3, drop_path=0.2).blocks
    assert isinstance(blocks[0].drop_path1, nn.Identity)
    assert isinstance(blocks[2].drop_path2, DropPath) and blocks[2].drop_path2.rate == pytest.approx(0.2)


def test_same_generator_same_weights():
    first, second = encoder().state_dict(), encoder().state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = encoder(generator=torch.Generator().manual_seed(1)).state_dict()
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


def test_every_parameter_gets_a_gradient():
    enc = encoder(drop_path=0.1)
    enc(torch.randn(2, 2, *ROI)).square().mean().backward()
    params = list(enc.parameters())
    assert len(params) == sum(p.grad is not None for p in params)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"roi_size": (16, 16, 10)}, r"\(16, 16, 10\)"),
        ({"patch_size": (8, 0, 4)}, r"\(8, 0, 4\)"),
        ({"embed_dim": 50}, "50"),
        ({"depth": 0}, "0"),
        ({"drop_path": 1.0}, "1.0"),
    ],
)
def test_ill_arguments_raise_value_error(kwargs, message):
    args = {"roi_size": ROI, "patch_size": PATCH, "embed_dim": 48, "depth": 2, "num_heads": 4} | kwargs
    with pytest.raises(ValueError, match=message):
        ViT3D(**args)


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(1, 1, 16, 16, 8\)"):
        encoder()(torch.zeros(1, 1, *ROI))
