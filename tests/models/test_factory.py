import pytest
import torch
from torch import nn

from endofed.models.blocks import DropPath
from endofed.models.factory import build_classifier, build_mae, load_encoder
from tests.helpers import TINY_ROI as ROI


def test_encoder_keys_identical_between_mae_and_classifier(tiny_cfg):
    mae, clf = build_mae(tiny_cfg, ROI), build_classifier(tiny_cfg, ROI)
    mae_keys = {k: v.shape for k, v in mae.encoder.state_dict().items()}
    clf_keys = {k: v.shape for k, v in clf.encoder.state_dict().items()}
    assert mae_keys == clf_keys
    assert {k for k in clf.state_dict() if not k.startswith("encoder.")} == {
        "head_norm.weight",
        "head_norm.bias",
        "head.weight",
        "head.bias",
    }


def test_strict_transfer_copies_the_weights(tiny_cfg):
    mae = build_mae(tiny_cfg, ROI, generator=torch.Generator().manual_seed(0))
    clf = build_classifier(tiny_cfg, ROI, generator=torch.Generator().manual_seed(1))
    load_encoder(clf, mae.encoder.state_dict())
    source, target = mae.encoder.state_dict(), clf.encoder.state_dict()
    assert all(torch.equal(source[k], target[k]) for k in source)


def test_transfer_refuses_missing_or_extra_keys(tiny_cfg):
    mae, clf = build_mae(tiny_cfg, ROI), build_classifier(tiny_cfg, ROI)
    weights = dict(mae.encoder.state_dict())
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_encoder(clf, weights | {"decoder_pred.weight": torch.zeros(1)})
    del weights["norm.bias"]
    with pytest.raises(RuntimeError, match="norm.bias"):
        load_encoder(clf, weights)
    with pytest.raises(TypeError, match="Linear"):
        load_encoder(nn.Linear(2, 2), weights)


def test_drop_path_only_in_the_classifier(tiny_cfg):
    mae, clf = build_mae(tiny_cfg, ROI), build_classifier(tiny_cfg, ROI)
    assert not any(isinstance(m, DropPath) for m in mae.modules())
    assert isinstance(clf.encoder.blocks[-1].drop_path1, DropPath)
    assert clf.encoder.blocks[-1].drop_path1.rate == pytest.approx(tiny_cfg.drop_path)


def test_roi_not_divisible_by_patch_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match=r"\(16, 16, 6\)"):
        build_mae(tiny_cfg, (16, 16, 6))


def test_build_from_state_takes_the_given_weights_without_random_init(tiny_cfg):
    source = build_mae(tiny_cfg, ROI, generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in source.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    model = build_mae(tiny_cfg, ROI, state=state)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # no random numbers drawn at all
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    assert model.decoder_pred.weight.data_ptr() == state["decoder_pred.weight"].data_ptr()  # taken, not copied
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert all(p.requires_grad for p in model.parameters())
    # the fixed tables (non-persistent buffers) are computed, not loaded
    assert torch.equal(model.encoder.pos_embed, source.encoder.pos_embed)
    assert torch.equal(model.decoder_pos_embed, source.decoder_pos_embed)
    x, mask = torch.randn(2, 2, *ROI), torch.zeros(2, source.encoder.num_tokens, dtype=torch.bool)
    mask[:, ::2] = True
    assert torch.equal(model(x, mask), source(x, mask))


def test_classifier_from_state_keeps_stochastic_depth_and_casts_dtypes(tiny_cfg):
    source = build_classifier(tiny_cfg, ROI, generator=torch.Generator().manual_seed(3))
    state = {k: v.double() for k, v in source.state_dict().items()}  # float64 in, float32 model out
    model = build_classifier(tiny_cfg, ROI, state=state)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert all(torch.equal(model.state_dict()[k], source.state_dict()[k]) for k in state)
    rates = [m.rate for m in model.modules() if isinstance(m, DropPath)]
    assert rates == [m.rate for m in source.modules() if isinstance(m, DropPath)] == [pytest.approx(0.1)] * 2


def test_build_from_state_refuses_a_state_that_does_not_fit(tiny_cfg):
    state = dict(build_mae(tiny_cfg, ROI).state_dict())
    with pytest.raises(ValueError, match="either generator .* or state"):
        build_mae(tiny_cfg, ROI, generator=torch.Generator(), state=state)
    missing = {k: v for k, v in state.items() if k != "decoder_pred.bias"}
    with pytest.raises(ValueError, match="state does not fit MaskedAutoencoder3D: .*decoder_pred.bias"):
        build_mae(tiny_cfg, ROI, state=missing)
    with pytest.raises(ValueError, match="state does not fit Classifier3D: .*Unexpected key"):
        build_classifier(tiny_cfg, ROI, state=state)
    wrong = state | {"encoder.norm.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match="size mismatch for encoder.norm.bias"):
        build_mae(tiny_cfg, ROI, state=wrong)
