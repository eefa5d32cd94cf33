"""The patch embeddings (linear, sub-block MLP) and the classifier's token pooling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from endofed.config import ExperimentConfig, ModelConfig, PretrainConfig
from endofed.errors import ConfigError
from endofed.models.factory import build_classifier, build_encoder, build_mae
from endofed.models.patches import patchify
from endofed.models.stem import SubPatchMLP, split_sub_blocks, sub_block_grid
from tests.helpers import TINY_ROI as ROI


def test_split_sub_blocks_by_hand():
    patch, block = (4, 2, 2), (2, 2, 1)
    voxels = torch.arange(16.0).reshape(1, 16)  # one patch, voxels in (px, py, pz) order
    blocks = split_sub_blocks(voxels, patch, block)
    assert blocks.shape == (1, 4, 4) and sub_block_grid(patch, block) == (2, 1, 2)
    cube = voxels.reshape(4, 2, 2)
    expected = [cube[x : x + 2, :, z].reshape(-1) for x in (0, 2) for z in (0, 1)]  # x slowest, then z
    for index, values in enumerate(expected):
        assert torch.equal(blocks[0, index], values)


def test_sub_block_must_divide_the_patch():
    with pytest.raises(ValueError, match=r"stem block \(3, 4, 2\) must divide the patch size \(16, 16, 4\)"):
        SubPatchMLP((16, 16, 4), (3, 4, 2), 8, 16)


def test_mlp_embedding_finds_a_blob_wherever_it_sits_in_the_patch():
    """Moving a bright sub-block to another sub-block of the patch leaves the mlp token unchanged."""
    torch.manual_seed(0)
    mlp = SubPatchMLP((4, 4, 2), (2, 2, 1), hidden=8, embed_dim=6)
    linear = torch.nn.Linear(32, 6)
    first, moved = torch.zeros(4, 4, 2), torch.zeros(4, 4, 2)
    first[0:2, 0:2, 0] = 1.0
    moved[2:4, 2:4, 1] = 1.0
    a, b = first.reshape(1, 32), moved.reshape(1, 32)
    assert torch.allclose(mlp(a), mlp(b), atol=1e-6)
    assert not torch.allclose(linear(a), linear(b), atol=1e-3)  # the linear embedding depends on where


def test_joint_embedding_sees_t1_and_t2_of_a_sub_block_together():
    """A T1-bright, T2-dark sub-block anywhere in the patch gives one token; apart, the two give another."""
    torch.manual_seed(0)
    joint = SubPatchMLP((4, 4, 2), (2, 2, 1), hidden=8, embed_dim=6, channels=2)
    assert joint.fc1.in_features == 2 * 4

    def patch(t1_at: tuple[slice, ...], t2_at: tuple[slice, ...]) -> torch.Tensor:
        t1, t2 = torch.zeros(4, 4, 2), torch.ones(4, 4, 2)
        t1[t1_at], t2[t2_at] = 1.0, 0.0
        return torch.stack([t1.reshape(32), t2.reshape(32)])[None]  # (1, C=2, P)

    corner, other = (slice(0, 2), slice(0, 2), 0), (slice(2, 4), slice(2, 4), 1)
    together, moved, apart = patch(corner, corner), patch(other, other), patch(corner, other)
    assert joint(together).shape == (1, 6)
    assert torch.allclose(joint(together), joint(moved), atol=1e-6)
    assert not torch.allclose(joint(together), joint(apart), atol=1e-4)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2, P\) patches"):
        joint(together[:, 0])


@pytest.fixture(params=["mlp", "mlp_joint"])
def mlp_cfg(tiny_cfg, request):
    return dataclasses.replace(tiny_cfg, patch_embed=request.param, stem_block=(2, 2, 2), stem_dim=8, pooling="max")


def test_mlp_encoder_tokens_see_only_their_own_patch(mlp_cfg):
    """Masked image modelling stays exact: changing one patch's voxels changes that token only."""
    encoder = build_encoder(mlp_cfg, ROI, generator=torch.Generator().manual_seed(0))
    x = torch.randn(1, 2, *ROI)
    changed = x.clone()
    changed[0, 1, :4, :4, :2] += 3.0  # the first T2 patch (TINY_PATCH voxels at the grid origin)
    tokens, tokens_changed = encoder.embed(x), encoder.embed(changed)
    differs = (tokens - tokens_changed).abs().amax(dim=-1)[0] > 1e-6  # (N,) for the one case
    first_t2 = encoder.tokens_per_modality  # modality-major order: T2 tokens follow the T1 ones
    # mlp_joint: the T1 token of that location reads its T2 voxels too (shared masks hide both together)
    expected = [0, first_t2] if mlp_cfg.patch_embed == "mlp_joint" else [first_t2]
    assert differs.nonzero().flatten().tolist() == expected


def test_joint_embedding_needs_shared_masks():
    model = ModelConfig(patch_embed="mlp_joint", patch_size=(16, 16, 4), stem_block=(4, 4, 2))
    with pytest.raises(ConfigError, match="mlp_joint reads T1 and T2 .* set pretrain.mask_mode=shared"):
        ExperimentConfig(model=model, pretrain=PretrainConfig(mask_mode="independent"))
    assert ExperimentConfig(model=model, pretrain=PretrainConfig(mask_mode="shared")).model.patch_embed == "mlp_joint"


def test_mlp_state_dict_keys_and_mae_round_trip(mlp_cfg):
    mae = build_mae(mlp_cfg, ROI, generator=torch.Generator().manual_seed(0))
    keys = [k for k in mae.encoder.state_dict() if k.startswith("patch_embed.0.")]
    assert keys == [f"patch_embed.0.{layer}.{p}" for layer in ("fc1", "fc2", "proj") for p in ("weight", "bias")]
    classifier = build_classifier(mlp_cfg, ROI, generator=torch.Generator().manual_seed(1))
    classifier.encoder.load_state_dict(mae.encoder.state_dict(), strict=True)  # same keys, same shapes
    x = torch.randn(2, 2, *ROI)
    n = mae.encoder.num_tokens
    mask = torch.zeros(2, n, dtype=torch.bool)
    mask[:, ::2] = True  # hide every other token
    predicted = mae(x, mask)
    assert predicted.shape == patchify(x, mlp_cfg.patch_size).shape and torch.isfinite(predicted).all()


def test_max_pooling_by_hand(mlp_cfg):
    classifier = build_classifier(mlp_cfg, ROI, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(2, 2, *ROI)
    tokens = classifier.encoder(x)
    expected = classifier.head(classifier.head_norm(tokens.amax(dim=1)))
    assert torch.allclose(classifier(x), expected, atol=1e-6)
    # With T1 absent for case 0, only its T2 tokens are pooled (and attended to).
    present = torch.tensor([[False, True], [True, True]])
    changed = x.clone()
    changed[0, 0] = 50.0
    assert torch.allclose(classifier(x, present), classifier(changed, present), atol=1e-5)
    assert torch.allclose(classifier(x, torch.ones(2, 2, dtype=torch.bool)), classifier(x), atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"patch_embed": "conv"}, "model.patch_embed must be one of"),
        ({"pooling": "attention"}, "model.pooling must be one of"),
        ({"stem_block": (3, 4, 2)}, r"model.stem_block \(3, 4, 2\) must divide model.patch_size"),
        ({"stem_dim": 0}, "model.stem_dim must be > 0"),
    ],
)
def test_bad_stem_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**change)
