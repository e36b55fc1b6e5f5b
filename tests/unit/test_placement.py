"""Where decoded data lives when training on a GPU, decided from the sizes alone (issue 22), with the note the
data line prints; the CUDA check at the end runs only where a GPU is."""
from __future__ import annotations

import pytest
import torch

from dlkit.data.prepare import placement

GiB = 2**30
CUDA = torch.device("cuda")


def test_small_data_goes_on_the_gpu_with_its_sizes_in_the_note():
    where, note = placement(47 * 2**20, CUDA, "auto", free_bytes=139 * GiB)  # Fashion-MNIST beside an H200
    assert where == CUDA and note.startswith("on the GPU: 0.05 GiB decoded vs 139.0 GiB free")


def test_data_over_a_quarter_of_free_memory_stays_in_pinned_host_memory():
    where, note = placement(30 * GiB, CUDA, "auto", free_bytes=100 * GiB)
    assert where.type == "cpu" and "pinned host memory: 30.00 GiB decoded vs 100.0 GiB free" in note
    assert placement(25 * GiB, CUDA, "auto", free_bytes=100 * GiB)[0] == CUDA  # exactly a quarter fits


def test_cache_flags_decide_and_the_cpu_keeps_its_data():
    assert placement(300 * GiB, CUDA, "device", free_bytes=GiB)[0] == CUDA
    assert placement(1, CUDA, "ram", free_bytes=100 * GiB)[0].type == "cpu"
    assert placement(1, torch.device("cpu"), "auto") == (torch.device("cpu"), "in cpu memory")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_fashion_mnist_sized_data_is_indexed_on_the_device():
    from dlkit.data.prepare import make_batches
    from dlkit.data.source import Samples
    from dlkit.data.spec import PreprocessSpec

    samples = Samples(torch.zeros(512, dtype=torch.int64), torch.zeros(512, 1, 28, 28, dtype=torch.uint8))
    batches = make_batches(samples, PreprocessSpec(28, 1, (0.5,), (0.5,), ("a",)), 128, True, CUDA)
    assert batches.images.device.type == "cuda" and batches.where.startswith("on the GPU")


def test_the_precision_label_says_tf32_where_cuda_computes_in_it():
    from dlkit.device import precision_label

    assert precision_label(torch.device("cpu"), amp=False) == "fp32"
    assert precision_label(CUDA, amp=True) == "bf16"
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        assert precision_label(CUDA, amp=False) == "fp32 (tf32 matmuls)"
        torch.backends.cuda.matmul.allow_tf32 = False  # --deterministic turns them off
        assert precision_label(CUDA, amp=False) == "fp32"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved



def seeded_batches(device, storage=None):
    from dlkit.data.loaders import TensorBatches
    from dlkit.data.source import Samples

    g = torch.Generator().manual_seed(0)
    samples = Samples(torch.randint(0, 10, (301,), generator=g),
                      torch.randint(0, 256, (301, 1, 8, 8), generator=g, dtype=torch.uint8))
    return samples, [(x.clone(), y.clone()) for x, y in TensorBatches(samples, 64, True, device, seed=3,
                                                                      storage=storage)]


def test_cpu_batches_cover_the_split_once_in_a_seeded_order():
    samples, batches = seeded_batches(torch.device("cpu"))
    assert [len(y) for _, y in batches] == [64, 64, 64, 64, 45]
    assert torch.equal(torch.cat([y for _, y in batches]).sort().values, samples.labels.sort().values)
    assert all(torch.equal(y, y2) for (_, y), (_, y2) in zip(batches, seeded_batches(torch.device("cpu"))[1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_on_the_gpu_and_from_pinned_host_memory_equal_the_cpu_ones():
    """Indexing on the GPU, and pinned host memory copied one batch ahead on a side stream: the same batches in the
    same seeded order as the CPU path."""
    _, cpu = seeded_batches(torch.device("cpu"))
    for storage in (CUDA, torch.device("cpu")):
        _, got = seeded_batches(CUDA, storage)
        torch.cuda.synchronize()
        assert len(got) == len(cpu) and all(x.device.type == "cuda" for x, _ in got)
        assert all(torch.equal(a.cpu(), b) and torch.equal(la.cpu(), lb) for (a, la), (b, lb) in zip(got, cpu))
