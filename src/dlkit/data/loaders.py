"""Batches for training: the in-memory fast path (index a uint8 tensor) and the DataLoader path for big folders."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataWarning, UserError
from ..device import usable_cpus
from .images import ImageError, guess_channels, load_image, open_image
from .source import Samples

MEMORY_SHARE = 0.5  # of the memory available at the start, for decoded uint8 images when --cache auto


def memory_budget() -> int:
    """Bytes of decoded images --cache auto keeps in RAM: half of what is available now (not a fixed size: half of
    an 8 GB laptop's memory is not free to take, and a big server has far more)."""
    from ..device import available_memory

    return int(MEMORY_SHARE * available_memory())


def fits_in_memory(n: int, channels: int, size: int, cache: str) -> bool:
    return cache in ("ram", "device") or (cache == "auto" and n * channels * size * size <= memory_budget())


def guess_file_channels(paths: list[Path], probe: int = 16) -> int:
    """1 when the first images are all grayscale, else 3."""
    for path in paths[:probe]:
        try:
            if guess_channels(open_image(path)) == 3:
                return 3
        except ImageError:
            continue
    return 1


SMALL_SIDE = 64  # files of one size no larger than this train at their own size


def uniform_small_side(paths: list[Path], probe: int = 256) -> int | None:
    """The shorter side of the images when an even sample of the files (up to `probe`, headers only: ~50 us
    each) all have one size, no side over SMALL_SIDE px; else None. A file that differs later is resized as any."""
    from PIL import Image

    if not paths:
        return None
    step = max(1, len(paths) // probe)
    sizes = set()
    for path in paths[::step][:probe]:
        try:
            with Image.open(path) as img:
                sizes.add(img.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # unreadable: found and listed when the data is decoded
        if len(sizes) > 1:
            return None
    if len(sizes) != 1 or max(next(iter(sizes))) > SMALL_SIDE:
        return None
    return min(next(iter(sizes)))


def photo_side(data, probe: int = 16) -> int | None:
    """The median shorter side of the first `probe` image files under a folder (headers only), or None for anything
    else (a built-in, a table, a manifest, no images): what picks the fine-tuning recipe for folders of photos."""
    import os

    from PIL import Image

    from .images import is_image_file

    if not isinstance(data, (str, Path)) or not Path(data).is_dir():
        return None
    sides = []
    for folder, dirs, files in os.walk(data):
        dirs.sort()
        for name in sorted(files):
            if len(sides) >= probe:
                break
            if is_image_file(Path(name)):
                try:
                    with Image.open(Path(folder) / name) as img:
                        sides.append(min(img.size))
                except (OSError, ValueError, Image.DecompressionBombError):  # listed when decoded
                    continue
        if len(sides) >= probe:
            break
    return sorted(sides)[len(sides) // 2] if sides else None


def decode_files(samples: Samples, channels: int, size: int, strict: bool, keep: bool,
                 disk_cache: bool = False) -> tuple[Samples, list[str]]:
    """Decode every file once (in worker processes, or threads: data/decode_pool.py). Unreadable ones are reported
    and dropped.

    keep=True returns the images as one uint8 tensor; keep=False only checks them (the DataLoader path).
    disk_cache=True (with keep) reuses an earlier decode of exactly these files at this size.
    """
    if keep and disk_cache:
        from . import diskcache

        key = diskcache.cache_key(samples, channels, size)
        cached = diskcache.load_cached(key)
        if cached is not None and not (strict and cached[1]):
            decoded, notes, kept = cached
            return Samples(decoded.labels, decoded.images, [samples.paths[i] for i in kept.tolist()]), notes
        decoded, notes = decode_files(samples, channels, size, strict, keep=True)
        good = set(decoded.paths)
        kept = torch.tensor([i for i, p in enumerate(samples.paths) if p in good], dtype=torch.int64)
        failed = diskcache.store(key, decoded, notes, kept)
        return decoded, notes + ([failed] if failed else [])

    from .decode_pool import decode_all

    images, errors = decode_all(samples.paths, channels, size, keep, usable_cpus())
    failed = sorted(errors)
    bad = [(samples.paths[i], errors[i]) for i in failed]
    if bad and strict:
        raise UserError(f"{len(bad)} unreadable image(s), first: {bad[0][1]}; remove them or drop --strict")
    good = torch.ones(len(samples.paths), dtype=torch.bool)
    good[failed] = False
    kept = samples.subset(good.nonzero().flatten())
    if keep:
        kept = Samples(kept.labels, images[good] if errors else images, kept.paths)
    notes = [DataWarning(f"skipped {len(bad)} unreadable image(s): " + "; ".join(str(r) for _, r in bad[:3])
                         + (" ..." if len(bad) > 3 else ""))] if bad else []
    return kept, notes


def _part(m: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of part `rank` when m items are cut into `world` near-equal contiguous parts, the first m % world
    of them one longer (as torch.tensor_split cuts)."""
    base, extra = divmod(m, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _train_part(m: int, rank: int, world: int, batch: int) -> tuple[int, int]:
    """[start, stop) of rank's slice of a global batch of m samples. A full batch (batch x world): the rank-th of
    `world` equal slices. The short last one is shared by as few ranks as keep each slice at most `batch` and, where
    that allows, at least 2 samples (BatchNorm cannot normalise a single sample in training); the others get none."""
    sharing = max(-(-m // batch), min(world, m // 2), 1)
    return _part(m, rank, sharing) if rank < sharing else (m, m)


@dataclass(frozen=True)
class Shard:
    """Which samples of each epoch's order this process takes: all of them when it trains alone.

    Several processes (DDP), training: every rank draws the same seeded order and cuts it into global batches of
    batch x world samples; rank r takes the r-th slice of each (see _train_part). So step s covers the same samples
    as one process at batch x world, each sample is seen once per epoch, and every rank takes the same number of
    steps. Each batch comes with a weight, its share of the global batch times world, that scales the rank's mean
    loss: DDP averages the ranks' gradients, and with these weights the average is the global batch's mean gradient
    however the last, short global batch is split. A rank left without a sample of that batch steps on a stand-in
    (its first samples, at most 2) at weight 0, so it still steps with the others and adds nothing.

    Several processes, evaluation: rank r takes the r-th contiguous chunk of the unshuffled split, without padding;
    the ranks' outputs gathered in rank order are the split in its own order, each sample once.
    """

    rank: int = 0
    world: int = 1
    evaluation: bool = False

    def steps(self, n: int, batch: int) -> int:
        if self.evaluation:
            start, stop = _part(n, self.rank, self.world)
            return -(-(stop - start) // batch)
        return -(-n // (batch * self.world))

    def pieces(self, order: torch.Tensor, batch: int, first_step: int = 0):
        """(indices, weight) of this process's batches from step `first_step` on; weight None: plain mean loss."""
        if self.world == 1 or self.evaluation:
            start, stop = _part(len(order), self.rank, self.world)
            mine = order[start:stop]
            for s in range(first_step * batch, len(mine), batch):
                yield mine[s:s + batch], None
            return
        group = batch * self.world
        for s in range(first_step * group, len(order), group):
            chunk = order[s:s + group]
            start, stop = _train_part(len(chunk), self.rank, self.world, batch)
            if stop > start:
                yield chunk[start:stop], (stop - start) * self.world / len(chunk)
            else:
                yield chunk[:1].repeat(min(2, batch)), 0.0

    def indices(self, order: torch.Tensor, batch: int, first_step: int = 0) -> torch.Tensor:
        parts = [idx for idx, _ in self.pieces(order, batch, first_step)]
        return torch.cat(parts) if parts else order[:0]

    def weights(self, n: int, batch: int, first_step: int = 0):
        """Each coming batch's weight, known from the sizes alone (the DataLoader path pairs them with its batches)."""
        if self.world == 1 or self.evaluation:
            return itertools.repeat(None)
        return [w for _, w in self.pieces(torch.arange(n), batch, first_step)]


class TensorBatches:
    """The fast path: one uint8 tensor, batched by indexing a seeded permutation; no per-sample Python.

    The tensor lives on `storage` (the GPU itself when it fits there) and batches are moved to `device`.
    Setting `skip_batches` makes the next epoch start part-way through its order (exact mid-epoch resume).
    """

    def __init__(self, samples: Samples, batch_size: int, shuffle: bool, device: torch.device, seed: int = 0,
                 storage: torch.device | None = None):
        storage = storage or device
        self.images = samples.inputs.to(storage)  # uint8 images, or float table rows
        self.labels = samples.labels.to(storage)
        if storage.type == "cpu" and device.type == "cuda":
            self.images, self.labels = self.images.pin_memory(), self.labels.pin_memory()
        self.device = device
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.skip_batches = 0
        self.shard = Shard()
        self.epoch, self.mirrored = 1, None

    def alternate_flip(self, seed: int) -> None:
        """airbench's alternating flip: a seeded half of the images mirrored in odd epochs and the other half in
        even ones, so across any two epochs every image is seen both ways (random flips repeat or miss some)."""
        flips = torch.rand(len(self.labels), generator=torch.Generator().manual_seed(seed)) < 0.5
        flips = flips.to(self.images.device)[:, None, None, None]
        self.mirrored = (torch.where(flips, self.images.flip(-1), self.images),
                         torch.where(flips, self.images, self.images.flip(-1)))

    def set_epoch(self, epoch: int) -> None:
        """The 1-based epoch about to run (a resumed run sets it too): the alternating flip's phase."""
        self.epoch = epoch

    def set_shard(self, shard: Shard) -> None:
        self.shard = shard

    def __len__(self) -> int:
        return self.shard.steps(len(self.labels), self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        first, self.skip_batches = self.skip_batches, 0
        images = self.images if self.mirrored is None else self.mirrored[(self.epoch - 1) % 2]
        pieces = self.shard.pieces(order, self.batch_size, first)
        if images.device.type == "cpu" and self.device.type == "cuda":
            yield from self._prefetched(images, pieces)
            return
        for idx, weight in pieces:  # on the device itself (or all on the CPU): indexing is the whole batch
            batch = images[idx].to(self.device), self.labels[idx].to(self.device)
            yield batch if weight is None else (*batch, weight)

    def _prefetched(self, images: torch.Tensor, pieces):
        """Data kept in host memory for a GPU: each batch gathered straight into pinned memory (torch's caching host
        allocator, which reuses a block only once its copy is done) and copied on a side stream one batch ahead, so
        the copy of batch k+1 overlaps the step on batch k; the step's stream waits on that batch's copy alone."""
        side = torch.cuda.Stream(device=self.device)
        ahead = None
        for idx, weight in pieces:
            copying = self._copy_on(side, images, idx), weight
            if ahead is not None:
                yield self._arrived(*ahead)
            ahead = copying
        if ahead is not None:
            yield self._arrived(*ahead)

    def _copy_on(self, side, images: torch.Tensor, idx: torch.Tensor):
        host = [torch.index_select(t, 0, idx, out=torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype,
                                                                pin_memory=True)) for t in (images, self.labels)]
        with torch.cuda.stream(side):
            batch = [t.to(self.device, non_blocking=True) for t in host]
            done = torch.cuda.Event()
            done.record(side)
        return batch, done

    def _arrived(self, copied, weight):
        batch, done = copied
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        for t in batch:  # allocated on the side stream, used on this one: not to be reused before this one is done
            t.record_stream(current)
        return tuple(batch) if weight is None else (*batch, weight)


class EpochOrder(torch.utils.data.Sampler):
    """Sample order from our own generator, each index paired with the epoch's augmentation seed; under DDP, this
    rank's part of it (see Shard), in the order the DataLoader's batches of `batch_size` cut it."""

    def __init__(self, n: int, shuffle: bool, generator: torch.Generator, batch_size: int = 1):
        self.n, self.shuffle, self.generator, self.batch_size = n, shuffle, generator, batch_size
        self.skip = 0  # batches of the next epoch to leave out (an exact mid-epoch resume)
        self.shard = Shard()

    def __len__(self) -> int:
        return len(self.shard.indices(torch.arange(self.n), self.batch_size, self.skip))

    def weights(self):
        return self.shard.weights(self.n, self.batch_size, self.skip)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        epoch_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        skip, self.skip = self.skip, 0
        return iter([(i, epoch_seed) for i in self.shard.indices(order, self.batch_size, skip).tolist()])


class FileDataset(torch.utils.data.Dataset):
    def __init__(self, samples: Samples, channels: int, size: int, augment=None):
        self.paths, self.labels = samples.paths, samples.labels
        self.channels, self.size, self.augment = channels, size, augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        i, epoch_seed = item if isinstance(item, tuple) else (item, 0)
        image = load_image(self.paths[i], self.channels, self.size)
        if self.augment is not None:
            # a pure function of (epoch, sample): the same draw whichever worker runs it, and after a resume
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((epoch_seed + i * 1_000_003) % 2**63)
                image = self.augment(image)
        return image, self.labels[i]


class FileBatches:
    """The DataLoader path for folders too big to keep decoded: worker processes decode and augment."""

    def __init__(self, samples: Samples, channels: int, size: int, batch_size: int, shuffle: bool,
                 device: torch.device, seed: int = 0, workers: int | None = None, augment=None,
                 timeout: float = 120):
        self.generator = torch.Generator().manual_seed(seed)  # its own: iterators must not draw from the global RNG
        self.sampler = EpochOrder(len(samples), shuffle, self.generator, batch_size)
        self.workers = workers = min(4, usable_cpus()) if workers is None else workers
        self.timeout = timeout if workers > 0 else 0
        self.batch_size = batch_size
        self.loader = torch.utils.data.DataLoader(
            samples.to_dataset() if hasattr(samples, "to_dataset") else FileDataset(samples, channels, size, augment),
            batch_size=batch_size, sampler=self.sampler,
            num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed + 1), timeout=self.timeout,
        )
        self.device = device

    def __len__(self) -> int:
        return self.sampler.shard.steps(self.num_samples, self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    @property
    def skip_batches(self) -> int:
        return self.sampler.skip

    @skip_batches.setter
    def skip_batches(self, n: int) -> None:
        self.sampler.skip = n

    def set_shard(self, shard: Shard) -> None:
        self.sampler.shard = shard
        if shard.world > 1:
            self.loader.worker_init_fn = _own_process_group

    def __iter__(self):
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and self.workers:
            # the workers decode on the same cores: compute threads that compete with them spin and slow both
            # (LeNet on a JPEG folder, 2 cores, 2 workers: 6.2k img/s with 2 threads, 7.9k with 1)
            torch.set_num_threads(max(1, min(threads, usable_cpus() - self.workers)))
        weights = self.sampler.weights()  # read before the loader draws the epoch's order (which clears the skip)
        try:
            for (images, labels), weight in zip(self.loader, weights):
                batch = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
                yield batch if weight is None else (*batch, weight)
        except RuntimeError as e:
            if "timed out" not in str(e):
                raise
            raise UserError(f"a DataLoader worker produced no batch for {self.timeout:g}s (a stuck file or disk?); "
                            "rerun with --workers 0 to see where it hangs, or raise --worker-timeout") from None
        finally:
            torch.set_num_threads(threads)


def _own_process_group(worker_id: int) -> None:
    """DataLoader workers of a torchrun rank leave the rank's process group: torchrun stops a job by signalling each
    rank's whole group, and a worker killed by it fails its rank mid-save. Outside the group the rank finishes its
    step, saves and closes its workers itself (they also exit on their own when their rank dies). Not ignoring
    SIGTERM instead: closing the workers at exit sends them SIGTERM, and waits for them to go."""
    import os

    os.setpgid(0, 0)
