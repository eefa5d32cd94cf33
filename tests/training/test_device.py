import pytest
import torch

from endofed.config import THREADS_ENV, SiteConfig
from endofed.errors import ConfigError
from endofed.training.device import cpu_threads, resolve_device, sole_job_threads


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


def test_cpu_threads_explicit_env_then_half_the_cores():
    assert cpu_threads(3, cores=16, env={THREADS_ENV: "5"}) == 3  # the site config wins
    assert cpu_threads(0, cores=16, env={THREADS_ENV: "5"}) == 5  # then the launcher's share
    assert cpu_threads(0, cores=16, env={}) == 8  # then half the cores
    assert cpu_threads(0, cores=2, env={}) == 1
    assert cpu_threads(0, cores=1, env={THREADS_ENV: " "}) == 1  # blank = unset; never 0 threads


def test_a_sole_job_takes_every_core_unless_told_otherwise():
    assert sole_job_threads(0, cores=2, env={}) == 2  # compare's units run one at a time
    assert sole_job_threads(0, cores=16, env={THREADS_ENV: "3"}) == 3
    assert sole_job_threads(1, cores=16, env={}) == 1
    assert sole_job_threads(0, cores=1, env={THREADS_ENV: ""}) == 1


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5"])
def test_cpu_threads_env_must_be_a_positive_integer(text):
    with pytest.raises(ConfigError, match=f"{THREADS_ENV} must be a positive integer, got {text!r}"):
        cpu_threads(0, cores=4, env={THREADS_ENV: text})


def test_resolving_the_cpu_sets_torchs_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(THREADS_ENV, "3")
        assert resolve_device("cpu") == torch.device("cpu") and torch.get_num_threads() == 3
        assert resolve_device("cpu", threads=1) == torch.device("cpu") and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_site_config_refuses_negative_threads():
    with pytest.raises(ConfigError, match="site.cpu_threads must be >= 0"):
        SiteConfig(cpu_threads=-1)
