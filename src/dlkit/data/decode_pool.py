"""Decoding a whole list of image files into one uint8 tensor: in forked worker processes where the OS allows it,
else in threads.

torchvision's decoders and Pillow release the GIL, but the Python around each small file (open, read, a header
check, a tensor) does not, so two threads decode 32-pixel JPEGs barely faster than one. Forked processes each have
their own interpreter: two cores decode twice as fast. They write the pixels straight into an anonymous shared
mapping, which fork hands down and which, unlike /dev/shm, has no size cap of its own (a small /dev/shm turns
torch's shared tensors into a SIGBUS); only the failures travel back, as text.
"""
from __future__ import annotations

import math
import mmap
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import torch

from ..device import one_thread_here
from .images import ImageError, load_image

THREAD_CHUNK = 64          # files per thread task: a task costs about as much as decoding one small JPEG
PROCESS_CHUNK = 1024       # files per process task: a few dozen tasks keep both workers busy to the end
PROCESS_MIN_FILES = 4096   # below this, starting workers costs more than they save


@dataclass
class DecodeJob:
    paths: list[Path]
    channels: int
    size: int | None
    out: torch.Tensor | None  # [N, channels, size, size] uint8, or None to check the files only


_job: DecodeJob | None = None  # the job forked workers decode: set before they start, inherited by fork


def decode_all(paths: list[Path], channels: int, size: int | None, keep: bool,
               workers: int) -> tuple[torch.Tensor | None, dict[int, ImageError]]:
    """(images [N, channels, size, size] uint8, with the rows of failed files left blank, or None when keep is
    False; {index: why that file could not be decoded})."""
    n = len(paths)
    processes = workers > 1 and n >= PROCESS_MIN_FILES and "fork" in multiprocessing.get_all_start_methods()
    out = None
    if keep:
        shape = (n, channels, size, size)
        out = _shared_uint8(shape) if processes else torch.zeros(shape, dtype=torch.uint8)
    job = DecodeJob(paths, channels, size, out)
    if processes:
        try:
            return out, _in_processes(job, workers)
        except BrokenProcessPool:  # a worker was killed (out of memory?): decode here, in threads
            pass
    return out, _in_threads(job, workers)


def _decode_range(job: DecodeJob, start: int, stop: int) -> dict[int, str]:
    errors = {}
    for i in range(start, stop):
        try:
            image = load_image(job.paths[i], job.channels, job.size)
        except ImageError as e:
            errors[i] = str(e)
            continue
        if job.out is not None:
            job.out[i] = image
    return errors


def _ranges(start: int, n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, n)) for s in range(start, n, chunk)]


def _in_threads(job: DecodeJob, workers: int) -> dict[int, ImageError]:
    with ThreadPoolExecutor(max_workers=workers, initializer=one_thread_here) as pool:
        parts = pool.map(lambda r: _decode_range(job, *r), _ranges(0, len(job.paths), THREAD_CHUNK))
        return {i: ImageError(message) for part in parts for i, message in part.items()}


def _in_processes(job: DecodeJob, workers: int) -> dict[int, ImageError]:
    global _job
    # the first chunk here, before forking: the modules and decoders it loads are then the workers' too, and no
    # import is left half done in the parent for a child to wait on forever
    errors = _decode_range(job, 0, min(THREAD_CHUNK, len(job.paths)))
    _job = job
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_start) as pool:
            ranges = _ranges(THREAD_CHUNK, len(job.paths), PROCESS_CHUNK)
            for part in pool.map(_decode_inherited_range, *zip(*ranges)):
                errors.update(part)
    finally:
        _job = None
    return {i: ImageError(message) for i, message in errors.items()}


def _worker_start() -> None:
    torch.set_num_threads(1)  # one core per worker: each decodes one file at a time


def _decode_inherited_range(start: int, stop: int) -> dict[int, str]:
    return _decode_range(_job, start, stop)


def _shared_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """A zeroed uint8 tensor on an anonymous MAP_SHARED mapping: what forked children write, the parent sees."""
    count = math.prod(shape)
    if count == 0:
        return torch.zeros(shape, dtype=torch.uint8)
    buffer = mmap.mmap(-1, count)  # anonymous and shared on Unix; the tensor keeps the mapping alive
    return torch.frombuffer(buffer, dtype=torch.uint8).view(shape)
