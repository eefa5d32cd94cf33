import pytest
import torch

from endofed.errors import ConfigError
from endofed.training.device import resolve_device


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=f"{name!r} requested but CUDA is not available"):
            resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="'cuda:3' requested but this machine has 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", "CPU"])
def test_unknown_names(name):
    with pytest.raises(ValueError, match=f"got {name!r}"):
        resolve_device(name)
