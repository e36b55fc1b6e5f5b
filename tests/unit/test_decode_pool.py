"""Decoding a folder in forked worker processes (data/decode_pool.py) gives exactly what threads give: the same
pixels in the same rows, the same failures at the same indices, and a clean fallback when a worker dies."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.data import decode_pool
from dlkit.data.images import ImageError
from dlkit.data.loaders import decode_files
from dlkit.data.source import Samples

pytestmark = pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                                reason="worker processes are forked; this OS cannot fork")


@pytest.fixture
def folder(tmp_path) -> list[Path]:
    """150 small JPEGs and PNGs (gray and colour, some larger than the target size), two of them broken."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(150):
        size = 20 if i % 3 else 40
        mode = "L" if i % 5 == 0 else "RGB"
        pixels = rng.integers(0, 256, (size, size) + (() if mode == "L" else (3,)), dtype=np.uint8)
        path = tmp_path / f"{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels, mode).save(path)
        paths.append(path)
    paths[7].write_bytes(b"not an image at all")
    paths[120].write_bytes(paths[120].read_bytes()[:60])  # truncated
    return paths


def in_threads(paths, keep=True):
    return decode_pool.decode_all(paths, 3, 20, keep, workers=1)


def test_processes_decode_the_same_pixels_and_failures_as_threads(folder, monkeypatch):
    monkeypatch.setattr(decode_pool, "PROCESS_MIN_FILES", 1)
    monkeypatch.setattr(decode_pool, "PROCESS_CHUNK", 16)  # several tasks per worker
    used = []
    real = decode_pool._in_processes
    monkeypatch.setattr(decode_pool, "_in_processes", lambda job, workers: used.append(workers) or real(job, workers))
    images, errors = decode_pool.decode_all(folder, 3, 20, True, workers=2)
    expected, expected_errors = in_threads(folder)
    assert used == [2]  # the process path ran
    assert images.shape == (150, 3, 20, 20) and images.dtype == torch.uint8
    assert torch.equal(images, expected) and images.sum() > 0
    assert sorted(errors) == sorted(expected_errors) == [7, 120]
    assert all(isinstance(e, ImageError) for e in errors.values())
    assert [str(errors[i]) for i in (7, 120)] == [str(expected_errors[i]) for i in (7, 120)]
    assert decode_pool._job is None  # nothing left behind for a later fork


def test_decode_files_drops_the_broken_files_in_order(folder, monkeypatch):
    monkeypatch.setattr(decode_pool, "PROCESS_MIN_FILES", 1)
    samples = Samples(torch.arange(150), None, folder)
    kept, notes = decode_files(samples, 3, 20, strict=False, keep=True)
    good = [i for i in range(150) if i not in (7, 120)]
    assert kept.paths == [folder[i] for i in good] and kept.labels.tolist() == good
    assert torch.equal(kept.images, in_threads(folder)[0][good])
    assert "skipped 2 unreadable image(s)" in notes[0]
    checked, _ = decode_files(samples, 3, 20, strict=False, keep=False)  # only checking: no pixels kept
    assert checked.paths == kept.paths


def test_a_worker_that_dies_falls_back_to_threads(folder, monkeypatch):
    monkeypatch.setattr(decode_pool, "PROCESS_MIN_FILES", 1)
    monkeypatch.setattr(decode_pool, "_worker_start", lambda: os.kill(os.getpid(), signal.SIGKILL))
    raised, real = [], decode_pool._in_processes

    def spy(job, workers):
        try:
            return real(job, workers)
        except Exception as e:
            raised.append(type(e).__name__)
            raise
    monkeypatch.setattr(decode_pool, "_in_processes", spy)
    images, errors = decode_pool.decode_all(folder, 3, 20, True, workers=2)
    expected, _ = in_threads(folder)
    assert raised == ["BrokenProcessPool"]  # the workers did die, and the threads did the work instead
    assert torch.equal(images, expected) and sorted(errors) == [7, 120]
