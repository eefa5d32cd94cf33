import pytest
import torch

from endofed.models.classifier import modality_presence
from endofed.models.factory import build_classifier
from tests.helpers import TINY_ROI as ROI


@pytest.fixture()
def classifier(tiny_cfg):
    return build_classifier(tiny_cfg, ROI, generator=torch.Generator().manual_seed(0))


def test_logits_shape(classifier):
    assert classifier(torch.randn(4, 2, *ROI)).shape == (4, 3)


def test_every_parameter_gets_a_gradient_in_fine_tuning(classifier):
    classifier.train()
    logits = classifier(torch.randn(4, 2, *ROI))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 1])).backward()
    params = list(classifier.parameters())
    assert len(params) == sum(p.grad is not None for p in params)


def test_missing_modality_is_ignored(classifier):
    classifier.eval()
    x = torch.randn(2, 2, *ROI)
    changed = x.clone()
    changed[0, 0] = 5.0  # T1 of case 0, declared absent
    present = torch.tensor([[False, True], [True, True]])
    out, out_changed = classifier(x, present), classifier(changed, present)
    assert torch.allclose(out, out_changed, atol=1e-5)
    assert not torch.allclose(classifier(x), classifier(changed), atol=1e-3)


def test_all_present_mask_equals_no_mask(classifier):
    classifier.eval()
    x = torch.randn(2, 2, *ROI)
    assert torch.allclose(classifier(x), classifier(x, torch.ones(2, 2, dtype=torch.bool)), atol=1e-5)


def test_modality_presence():
    valid = torch.zeros(2, 2, *ROI, dtype=torch.bool)
    valid[0, 1, 3, 3, 3] = True
    valid[1] = True
    assert modality_presence(valid).tolist() == [[False, True], [True, True]]


def test_bad_presence_is_refused(classifier):
    x = torch.randn(2, 2, *ROI)
    with pytest.raises(ValueError, match="at least one modality"):
        classifier(x, torch.tensor([[False, False], [True, True]]))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        classifier(x, torch.ones(2, 3, dtype=torch.bool))
