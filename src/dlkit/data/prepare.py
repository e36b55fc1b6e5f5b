"""A source made ready to train on: its spec fixed (size, channels, mean/std from the training split), its splits
decoded where they fit, and batches served from memory or files."""
from __future__ import annotations

from dataclasses import replace

import torch

from .augment import ALTERNATING, file_augment
from .loaders import FileBatches, TensorBatches, decode_files, fits_in_memory, guess_file_channels, uniform_small_side
from .source import DataSource, PreparedData, Samples
from .spec import PreprocessSpec
from .transforms import channel_stats, fit_to_spec


def prepare_data(source: DataSource, image_size: int | None, channels: int | None, default_size: int,
                 cache: str = "auto", strict: bool = False, disk_cache: bool = False,
                 smallest: int = 1) -> PreparedData:
    """Fix the spec (size, channels, mean/std from the training split) and decode the splits for it.

    The size: --image-size; else the data's own (tensors; or files whose images all share one size of at most
    SMALL_SIDE px that the model takes, `smallest` and up: CIFAR's 32 px JPEGs are not blown up to 224); else the
    model's default."""
    native = source.train.images.shape[-1] if source.train.images is not None else None
    channels = channels or source.channels or guess_file_channels(source.train.paths)
    small = None if image_size or native else uniform_small_side(source.train.paths)
    own = small if small and small >= smallest and small != default_size else None
    too_small = bool(native and not image_size and native < smallest)  # digits' 8 px for lenet: as files are
    size = image_size or (default_size if too_small else native) or own or default_size
    spec = PreprocessSpec(size, channels, (0.0,) * channels, (1.0,) * channels, tuple(source.classes))
    notes = list(source.notes) + ([f"every image is {small}x{small} px or that size's crop: training at {small} px "
                                   f"(the model's default is {default_size}; --image-size overrides)"] if own else [])
    notes += [f"the images are {native} px, smaller than the model takes ({smallest} px): resized to its "
              f"default {default_size} px (--image-size overrides)"] if too_small else []
    train, train_notes = prepare_split(source.train, spec, cache, strict, disk_cache)
    val, val_notes = prepare_split(source.val, spec, cache, strict, disk_cache)
    notes = list(dict.fromkeys(notes + train_notes + val_notes))  # a note both splits raise (the disk cache's) once
    if source.mean is not None and len(source.mean) == channels:
        mean, std = source.mean, source.std
    elif train.images is not None:
        mean, std = channel_stats(train.images)
    else:  # files: statistics from a decoded sample of up to 512 training images
        probe, _ = decode_files(train.subset(torch.arange(min(512, len(train)))), channels, size, False, keep=True)
        mean, std = channel_stats(probe.images)
    return PreparedData(source, replace(spec, mean=mean, std=std), train, val, notes)


def prepare_split(samples: Samples, spec: PreprocessSpec, cache: str = "auto", strict: bool = False,
                  disk_cache: bool = False) -> tuple[Samples, list[str]]:
    """Samples at the spec's size and channels: in memory when they fit (or already are), else checked file lists."""
    if samples.images is not None:
        return Samples(samples.labels, fit_to_spec(samples.images, spec)), []
    keep = fits_in_memory(len(samples), spec.channels, spec.image_size, cache)
    return decode_files(samples, spec.channels, spec.image_size, strict, keep=keep, disk_cache=disk_cache and keep)


def make_batches(samples: Samples, spec: PreprocessSpec, batch_size: int, shuffle: bool, device: torch.device,
                 seed: int = 0, workers: int | None = None, augment: str = "none", cache: str = "auto",
                 timeout: float = 120):
    """Batches of (uint8 images, labels) on `device`. In-memory data is augmented later, on the device."""
    if samples.inputs is not None:
        nbytes = samples.inputs.numel() * samples.inputs.element_size()
        storage, where = placement(nbytes, device, cache)
        batches = TensorBatches(samples, batch_size, shuffle, device, seed, storage=storage)
        if shuffle and augment == ALTERNATING:
            batches.alternate_flip(seed + 3)
        batches.where = where  # the trainer's data line on CUDA says it
        return batches
    transform = file_augment(augment, spec.image_size) if shuffle else None
    return FileBatches(samples, spec.channels, spec.image_size, batch_size, shuffle, device, seed, workers, transform,
                       timeout)


DEVICE_SHARE = 4  # --cache auto keeps decoded data on the GPU when it fits in a quarter of its free memory


def placement(nbytes: int, device: torch.device, cache: str, free_bytes: int | None = None) -> tuple[torch.device, str]:
    """Where the decoded tensor lives, and why, from the sizes alone: on the GPU when training there and it fits in
    1/DEVICE_SHARE of the free memory (batches are then drawn by indexing on the device: no host copy per step);
    else in pinned host memory (non-blocking copies); on the CPU or MPS, where training runs."""
    if device.type != "cuda":
        return device, f"in {device.type} memory"
    if cache == "device":
        return device, "on the GPU (--cache device)"
    if cache == "ram":
        return torch.device("cpu"), "in pinned host memory (--cache ram), copied to the GPU batch by batch"
    free = torch.cuda.mem_get_info(device)[0] if free_bytes is None else free_bytes
    sizes = f"{nbytes / 2**30:.2f} GiB decoded vs {free / 2**30:.1f} GiB free on the GPU"
    if nbytes <= free // DEVICE_SHARE:
        return device, f"on the GPU: {sizes} (it may take a quarter)"
    return torch.device("cpu"), f"in pinned host memory: {sizes}, more than a quarter; copied batch by batch"
