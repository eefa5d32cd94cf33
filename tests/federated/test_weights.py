from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from endofed.federated.weights import NORM_KEY, POLICIES, encoder_state, load_shared, shared_keys

# Written out by hand for depth 2: the federated key set must not drift silently.
BLOCK_KEYS = [
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
]
ENCODER_KEYS = {
    "modality_embed",
    "patch_embed.0.weight",
    "patch_embed.0.bias",
    "patch_embed.1.weight",
    "patch_embed.1.bias",
    *(f"blocks.{i}.{key}" for i in range(2) for key in BLOCK_KEYS),
    "norm.weight",
    "norm.bias",
}
NORM_KEYS = {f"blocks.{i}.norm{j}.{p}" for i in range(2) for j in (1, 2) for p in ("weight", "bias")} | {
    "norm.weight",
    "norm.bias",
}


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.norm = nn.LayerNorm(2)
        self.register_buffer("running", torch.ones(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.head = nn.Linear(2, 1)


def test_encoder_policy_shares_exactly_the_encoder_state_dict(tiny_mae):
    keys = shared_keys(tiny_mae)
    assert list(keys) == list(tiny_mae.encoder.state_dict())
    assert set(keys) == ENCODER_KEYS
    assert "pos_embed" not in keys  # non-persistent buffer, not a weight


def test_no_decoder_or_head_key_is_shared(tiny_mae, tiny_classifier):
    for model in (tiny_mae, tiny_classifier):
        local = {k for k in model.state_dict() if not k.startswith("encoder.")}
        assert local, "the model must have site-local entries for this test to mean anything"
        for policy in POLICIES:
            keys = set(shared_keys(model, policy))
            assert not keys & local
            assert not any(k.startswith(("decoder", "head", "mask_token")) for k in keys)


def test_mae_and_classifier_share_the_same_keys(tiny_mae, tiny_classifier):
    for policy in POLICIES:
        assert shared_keys(tiny_mae, policy) == shared_keys(tiny_classifier, policy)


def test_state_dict_input_gives_the_same_keys_as_the_model(tiny_mae):
    for policy in POLICIES:
        from_model = shared_keys(tiny_mae, policy)
        assert shared_keys(tiny_mae.state_dict(), policy) == from_model  # full dict, prefix stripped
        assert shared_keys(tiny_mae.encoder.state_dict(), policy) == from_model  # encoder dict
        assert shared_keys(tiny_mae.encoder, policy) == from_model  # the encoder itself


def test_no_norm_policy_keeps_exactly_the_layer_norms_local(tiny_mae):
    keys = set(shared_keys(tiny_mae, "encoder_no_norm"))
    assert keys == ENCODER_KEYS - NORM_KEYS
    assert len(ENCODER_KEYS) - len(keys) == 10
    named = {k for k in tiny_mae.encoder.state_dict() if NORM_KEY.search(k)}
    assert named == NORM_KEYS  # the name rule (state dicts) agrees with the module-type rule (models)


def test_float_buffers_are_shared_and_integer_buffers_are_not():
    model = _Model()
    # state-dict order: a module's own buffers come before its children's entries
    assert shared_keys(model) == ("running", "linear.weight", "linear.bias", "norm.weight", "norm.bias")
    assert shared_keys(model, "encoder_no_norm") == ("running", "linear.weight", "linear.bias")
    assert shared_keys(model.state_dict()) == shared_keys(model)


def test_unknown_policy_and_model_without_encoder_are_refused(tiny_mae):
    with pytest.raises(ValueError, match="'fedbn'"):
        shared_keys(tiny_mae, "fedbn")
    with pytest.raises(TypeError, match="Linear"):
        shared_keys(nn.Linear(2, 2))


def test_encoder_state_is_a_detached_fp32_cpu_copy(tiny_mae):
    state = encoder_state(tiny_mae)
    live = tiny_mae.encoder.state_dict()
    assert list(state) == list(live)
    for key, tensor in state.items():
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
        assert tensor.is_contiguous() and not tensor.requires_grad
        assert torch.equal(tensor, live[key])
        assert tensor.data_ptr() != live[key].data_ptr()
    state["norm.weight"].add_(1.0)
    assert torch.equal(tiny_mae.encoder.norm.weight.detach(), live["norm.weight"])
    assert not torch.equal(state["norm.weight"], tiny_mae.encoder.norm.weight.detach())


def test_encoder_state_casts_to_fp32_and_follows_the_policy(tiny_mae):
    tiny_mae.double()
    state = encoder_state(tiny_mae, "encoder_no_norm")
    assert set(state) == ENCODER_KEYS - NORM_KEYS
    assert {t.dtype for t in state.values()} == {torch.float32}


def test_load_shared_copies_the_encoder_and_leaves_local_parts(tiny_mae, tiny_classifier):
    head_before = {k: v.clone() for k, v in tiny_classifier.state_dict().items() if not k.startswith("encoder.")}
    load_shared(tiny_classifier, encoder_state(tiny_mae))
    for key, value in tiny_mae.encoder.state_dict().items():
        assert torch.equal(tiny_classifier.encoder.state_dict()[key], value)
    for key, value in head_before.items():
        assert torch.equal(tiny_classifier.state_dict()[key], value)


def test_load_shared_no_norm_keeps_the_site_norms(tiny_mae, tiny_classifier):
    site_norm = tiny_classifier.encoder.norm.weight.detach().clone()
    with torch.no_grad():
        tiny_mae.encoder.norm.weight.fill_(7.0)
    load_shared(tiny_classifier, encoder_state(tiny_mae, "encoder_no_norm"), "encoder_no_norm")
    assert torch.equal(tiny_classifier.encoder.norm.weight.detach(), site_norm)
    assert torch.equal(tiny_classifier.encoder.modality_embed.detach(), tiny_mae.encoder.modality_embed.detach())


def test_load_shared_accepts_read_only_numpy_arrays(tiny_mae, tiny_classifier):
    arrays = {}
    for key, tensor in encoder_state(tiny_mae).items():
        array = tensor.numpy().copy()
        array.flags.writeable = False
        arrays[key] = array
    load_shared(tiny_classifier, arrays)
    assert np.array_equal(tiny_classifier.encoder.norm.bias.detach().numpy(), arrays["norm.bias"])


def test_load_shared_names_missing_and_unexpected_keys(tiny_mae, tiny_classifier):
    state = encoder_state(tiny_mae)
    del state["norm.bias"]
    state["decoder_embed.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['norm.bias'\], unexpected \['decoder_embed.weight'\]"):
        load_shared(tiny_classifier, state)


def test_load_shared_refuses_the_wrong_policy_and_a_wrong_shape(tiny_mae, tiny_classifier):
    with pytest.raises(ValueError, match="unexpected"):
        load_shared(tiny_classifier, encoder_state(tiny_mae), "encoder_no_norm")
    state = encoder_state(tiny_mae)
    state["modality_embed"] = torch.zeros(3, 32)
    with pytest.raises(ValueError, match=r"'modality_embed' has shape \(3, 32\), expected \(2, 32\)"):
        load_shared(tiny_classifier, state)
