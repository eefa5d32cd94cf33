import pytest
import torch

from endofed.ssl.prefetch import device_batches

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def batches(n: int) -> list[dict[str, torch.Tensor]]:
    return [
        {"image": torch.full((2, 3), float(i)), "mask": torch.ones(2, 3, dtype=torch.bool), "label": torch.tensor(i)}
        for i in range(n)
    ]


def test_cpu_batches_keep_order_and_only_the_training_keys():
    moved = list(device_batches(batches(3), torch.device("cpu")))
    assert [set(b) for b in moved] == [{"image", "mask"}] * 3
    assert [b["image"][0, 0].item() for b in moved] == [0.0, 1.0, 2.0]
    assert list(device_batches([], torch.device("cpu"))) == []


@pytest.mark.gpu
@CUDA
def test_cuda_prefetch_delivers_every_batch_intact():
    source = [{k: v.pin_memory() for k, v in b.items()} for b in batches(5)]
    device = torch.device("cuda")
    moved = [b["image"].sum().item() for b in device_batches(source, device)]
    assert moved == [6.0 * i for i in range(5)]
