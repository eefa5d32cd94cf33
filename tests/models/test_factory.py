import pytest
import torch
from torch import nn

from endofed.models.blocks import DropPath
from endofed.models.factory import build_classifier, build_mae, load_encoder

from .conftest import ROI


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
