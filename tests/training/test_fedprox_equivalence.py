"""FedProx with mu = 0 trains exactly like FedAvg; with mu > 0 the local weights stay closer to the global ones."""

from __future__ import annotations

import torch

from endofed.config import ModelConfig, PretrainConfig
from endofed.federated.proximal import global_snapshot, proximal_term
from endofed.models import build_mae
from endofed.ssl.pretrain import pretrain_epochs

ROI = (16, 16, 8)
MODEL = ModelConfig(patch_size=(8, 8, 4), embed_dim=32, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1,
                    decoder_heads=2)  # fmt: skip
CFG = PretrainConfig(epochs=2, batch_size=2, warmup_epochs=0, lr=1e-3)


def _loader() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(2, 2, *ROI, generator=generator)} for _ in range(3)]


def _train(mu: float | None) -> dict[str, torch.Tensor]:
    model = build_mae(MODEL, ROI, generator=torch.Generator().manual_seed(1))
    snapshot = global_snapshot(model.encoder)
    regulariser = None if mu is None else (lambda: proximal_term(model.encoder, snapshot, mu))
    pretrain_epochs(model, _loader(), CFG, torch.device("cpu"), seed=3, regulariser=regulariser)
    return {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}


def _distance(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    return float(sum(((state[k] - reference[k]) ** 2).sum() for k in state))


def test_mu_zero_equals_fedavg_and_mu_positive_pulls_back():
    start = {
        k: v.clone()
        for k, v in build_mae(MODEL, ROI, generator=torch.Generator().manual_seed(1)).encoder.state_dict().items()
    }
    fedavg, fedprox_zero, fedprox = _train(None), _train(0.0), _train(10.0)
    for key in fedavg:
        torch.testing.assert_close(fedprox_zero[key], fedavg[key], rtol=0, atol=0)
    assert _distance(fedprox, start) < _distance(fedavg, start)
