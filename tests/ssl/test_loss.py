import pytest
import torch

from endofed.ssl.loss import masked_patch_mse, normalize_patches


def test_hand_computed_loss():
    # token 0: target [1, 3] -> mean 2, var 1 -> [-1, 1]; pred [0, 0] -> ((-1)^2 + 1^2) / 2 = 1
    # token 1: target [2, 2] -> var 0 -> [0, 0];           pred [1, 3] -> (1 + 9) / 2 = 5
    # token 2: visible, ignored whatever it predicts
    target = torch.tensor([[[1.0, 3.0], [2.0, 2.0], [5.0, 9.0]]])
    pred = torch.tensor([[[0.0, 0.0], [1.0, 3.0], [100.0, -100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_patch_mse(pred, target, mask).item() == pytest.approx(3.0, rel=1e-5)


def test_normalisation_uses_population_variance_and_eps():
    out = normalize_patches(torch.tensor([[[1.0, 3.0]]]), eps=1.0)  # var 1 -> divide by sqrt(2)
    assert out.flatten().tolist() == pytest.approx([-(2**-0.5), 2**-0.5])


def test_perfect_reconstruction_gives_zero():
    target = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0)) * 5 + 3
    mask = torch.rand(2, 16, generator=torch.Generator().manual_seed(1)) < 0.75
    assert masked_patch_mse(normalize_patches(target), target, mask).item() == pytest.approx(0.0, abs=1e-10)


def test_visible_predictions_do_not_change_the_loss():
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randn(3, 10, 6, generator=g), torch.randn(3, 10, 6, generator=g)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, ::3] = True
    changed = torch.where(mask[..., None], pred, pred + 50.0)
    assert masked_patch_mse(changed, target, mask).item() == masked_patch_mse(pred, target, mask).item()
    hidden_changed = torch.where(mask[..., None], pred + 1.0, pred)
    assert masked_patch_mse(hidden_changed, target, mask).item() != masked_patch_mse(pred, target, mask).item()


def test_invalid_tokens_are_left_out_and_empty_selection_is_zero():
    target = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])
    pred = torch.zeros(1, 2, 2)
    mask = torch.tensor([[True, True]])
    valid = torch.tensor([[True, False]])
    assert masked_patch_mse(pred, target, mask, valid).item() == pytest.approx(1.0, rel=1e-5)
    assert masked_patch_mse(pred, target, mask, torch.zeros(1, 2, dtype=torch.bool)).item() == 0.0


def test_bf16_predictions_are_accepted():
    target = torch.randn(2, 4, 8)
    loss = masked_patch_mse(normalize_patches(target).bfloat16(), target, torch.ones(2, 4, dtype=torch.bool))
    assert loss.dtype == torch.float32 and loss.item() < 1e-3


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\(1, 2, 2\) and \(1, 2, 3\)"):
        masked_patch_mse(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        masked_patch_mse(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.ones(1, 3, dtype=torch.bool))
