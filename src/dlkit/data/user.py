"""The learner's own data: any map-style `Dataset` yielding (image, label), passed from Python.

`dlkit.train(data=MyData(...), val_data=...)` takes what the course has the learner write (a `Dataset` subclass over
the ants folder, returning a PIL image and the folder's name) or build (`torchvision.datasets.CIFAR10(root,
transform=...)`). Such data streams through the DataLoader path with the user's own transform left alone:

- PIL images and uint8 tensors are what dlkit's own files are, so they are resized to the spec's square side and
  normalised with the training split's statistics, exactly as a folder of images would be;
- float tensors are taken as the model's input, as the user's transform made them; the spec records their size,
  channels and the mean/std of a `Normalize` in that transform, so `dlkit predict` on an image file rebuilds them.

Labels may be class indices or names (the course's MyData returns the folder name "ants"). Class names come from
`dataset.classes` when it has them, else from the labels.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from .transforms import Inputs
from .modality import Images, MODALITIES
from .source import holdout_indices
from .spec import PreprocessSpec

PROBE_ITEMS = 512  # items read to compute the channel statistics of PIL/uint8 data


def is_dataset(obj: Any) -> bool:
    return not isinstance(obj, (str, bytes)) and hasattr(obj, "__getitem__") and hasattr(obj, "__len__")


def dataset_name(dataset: Any) -> str:
    return type(dataset).__name__


class ItemReader:
    """One raw item -> (CxSxS tensor, class index), or a UserError naming the dataset, the index and what was wanted."""

    def __init__(self, name: str, kind: str, shape: tuple[int, ...], size: int, class_index: dict[Any, int]):
        self.name, self.kind, self.shape, self.size, self.class_index = name, kind, shape, size, class_index

    def __call__(self, item: Any, index: int) -> tuple[torch.Tensor, int]:
        image, label = _split_item(item, self.name, index)
        return self.image(image, index), self.label(label, index)

    def image(self, image: Any, index: int) -> torch.Tensor:
        from PIL import Image

        from .images import load_image, resize_center

        if self.kind == "float":
            if not (isinstance(image, torch.Tensor) and image.is_floating_point() and tuple(image.shape) == self.shape):
                raise UserError(f"{self.name}[{index}] is {_describe(image)}; expected a float tensor of shape "
                                f"{'x'.join(map(str, self.shape))} like item 0 (CxHxW, as your transform makes it)")
            return image
        if isinstance(image, Image.Image):
            return load_image(image, self.shape[0], self.size)
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3:
            from .transforms import convert_channels

            return resize_center(convert_channels(image.unsqueeze(0), self.shape[0]), self.size)[0]
        raise UserError(f"{self.name}[{index}] is {_describe(image)}; expected a PIL image or a uint8 CxHxW tensor "
                        "like item 0")

    def label(self, label: Any, index: int) -> int:
        key = _label_key(label)
        if key not in self.class_index:
            raise UserError(f"{self.name}[{index}] has label {label!r}, which is not one of the "
                            f"{len(self.class_index)} classes seen in the training data")
        return self.class_index[key]


class DatasetSamples:
    """One split of the user's dataset: which of its items, and their class indices. Neither in memory nor files,
    so the trainer streams it through a DataLoader."""

    images = None   # not decoded in memory
    paths = None    # not files
    inputs = None

    def __init__(self, dataset: Any, indices: torch.Tensor, labels: torch.Tensor, reader: ItemReader):
        self.dataset, self.indices, self.labels, self.reader = dataset, indices, labels, reader

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "DatasetSamples":
        return DatasetSamples(self.dataset, self.indices[index], self.labels[index], self.reader)

    def to_dataset(self, augment=None) -> torch.utils.data.Dataset:
        """What the DataLoader reads (dlkit's --augment is not applied: the user's transform is theirs)."""
        return _Items(self)

    def uint8_images(self, spec: PreprocessSpec) -> torch.Tensor:
        """The items as uint8 images, for previews (float inputs are un-normalised with the spec's mean/std)."""
        images = torch.stack([self.reader(self.dataset[int(i)], int(i))[0] for i in self.indices])
        if images.dtype == torch.uint8:
            return images
        mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
        std = torch.tensor(spec.std).view(1, -1, 1, 1)
        return (images.float() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)


class _Items(torch.utils.data.Dataset):
    def __init__(self, samples: DatasetSamples):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        i = item[0] if isinstance(item, tuple) else item  # dlkit's sampler pairs each index with an epoch seed
        index = int(self.samples.indices[i])
        image, _ = self.samples.reader(self.samples.dataset[index], index)
        return image, self.samples.labels[i]


class PassThroughInputs(Inputs):
    """Float batches are already the model's input (the user's transform made them); uint8 ones are normalised."""

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return super().__call__(images, train)
        x = images.float()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@MODALITIES.register("dataset", help="your own torch Dataset of (image, label), passed from Python")
class UserDatasets(Images):
    """Images, read from the user's Dataset objects instead of files. Bound to them by `for_objects`."""

    def __init__(self, train: Any, val: Any = None):
        self.train, self.val = train, val

    def prepare(self, cfg, default_size: int, smallest: int = 1):
        if self.train is None:
            raise UserError(f"{cfg.data} was your own Dataset object, which only Python can pass again: "
                            "dlkit.train(data=your_dataset, ...), or --data FOLDER")
        data, notes = prepare_datasets(self.train, self.val, cfg, default_size)
        if cfg.augment != "none":
            notes.append(f"--augment {cfg.augment} is not applied to your own Dataset: its transform is yours")
        data.notes = notes
        return data

    def inputs(self, spec, augment=None, channels_last: bool = False):
        return PassThroughInputs(spec, None, channels_last)


def prepare_datasets(train: Any, val: Any, cfg, default_size: int):
    """The spec and the two splits of the user's datasets (val: a seeded, stratified hold-out when not given)."""
    from .source import DataSource, PreparedData

    name = dataset_name(train)
    _check_dataset(train, "data")
    first_image, _ = _split_item(train[0], name, 0)
    kind, shape = _kind_of(first_image, name)
    raw_labels = _labels_of(train, name)
    classes, class_index = _classes(train, raw_labels)
    labels = torch.tensor([class_index[_label_key(v)] for v in raw_labels], dtype=torch.int64)
    notes: list[str] = []
    if val is None:
        train_idx, val_idx = holdout_indices(len(train), labels, cfg.val_split, cfg.seed)
        val_set, val_labels = train, labels[val_idx]
        notes.append(f"held out {cfg.val_split:.0%} of {name} for validation (seeded, stratified); pass val_data= "
                     "to use your own")
    else:
        _check_dataset(val, "val_data")
        train_idx, val_idx = torch.arange(len(train)), torch.arange(len(val))
        val_keys = [_label_key(v) for v in _labels_of(val, dataset_name(val))]  # read once: it may decode every item
        unknown = sorted({str(k) for k in val_keys if k not in class_index})
        if unknown:
            raise UserError(f"val_data has label(s) {', '.join(unknown[:5])} that the training data does not; "
                            "both datasets must use the same classes")
        val_set, val_labels = val, torch.tensor([class_index[k] for k in val_keys], dtype=torch.int64)
    channels, size, mean, std = _geometry(kind, shape, first_image, cfg, default_size, train, notes)
    reader = ItemReader(name, kind, (channels, size, size) if kind != "float" else shape, size, class_index)
    train_samples = DatasetSamples(train, train_idx, labels[train_idx], reader)
    val_samples = DatasetSamples(val_set, val_idx, val_labels, reader)
    if kind != "float":
        mean, std = _channel_stats(train_samples)
    spec = PreprocessSpec(size, channels, mean, std, tuple(classes))
    source = DataSource(name, "your Dataset", list(classes), train_samples, val_samples, channels=channels)
    data = PreparedData(source, spec, train_samples, val_samples, notes)
    data.headline = (f"{name}: {len(train_samples)} train / {len(val_samples)} val samples, {len(classes)} classes; "
                     f"your Dataset through a DataLoader ({'your transform' if kind == 'float' else kind + ' images'})"
                     f"; input {channels}x{size}x{size}")
    return data, notes


def _check_dataset(dataset: Any, argument: str) -> None:
    if isinstance(dataset, torch.utils.data.IterableDataset) or not is_dataset(dataset):
        raise UserError(f"{argument}= must be a map-style Dataset (with __len__ and __getitem__) of (image, label), "
                        f"got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise UserError(f"{argument}= ({dataset_name(dataset)}) is empty")


def _split_item(item: Any, name: str, index: int) -> tuple[Any, Any]:
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise UserError(f"{name}[{index}] is {_describe(item)}; expected a pair (image, label)")
    return item[0], item[1]


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a {obj.dtype} tensor of shape {'x'.join(map(str, obj.shape))}"
    return f"a {type(obj).__name__}"


def _kind_of(image: Any, name: str) -> tuple[str, tuple[int, ...]]:
    from PIL import Image

    if isinstance(image, Image.Image):
        return "pil", ()
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] in (1, 3):
        return ("float" if image.is_floating_point() else "uint8"), tuple(image.shape)
    raise UserError(f"{name}[0] is {_describe(image)}; expected a PIL image or a CxHxW tensor with 1 or 3 channels "
                    "(add transforms.ToTensor() or PILToTensor() to your transform)")


def _label_key(label: Any) -> Any:
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    return int(label) if isinstance(label, (int, bool)) or hasattr(label, "__index__") else str(label)


def _labels_of(dataset: Any, name: str) -> list:
    """`targets` where the dataset keeps them (torchvision's do); otherwise every item is read once."""
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return list(targets.tolist() if isinstance(targets, torch.Tensor) else targets)
    return [_split_item(dataset[i], name, i)[1] for i in range(len(dataset))]


def _classes(dataset: Any, labels: list) -> tuple[list[str], dict[Any, int]]:
    keys = sorted({_label_key(v) for v in labels}, key=lambda k: (isinstance(k, str), k))
    if all(isinstance(k, str) for k in keys):  # names, as the course's MyData returns them
        return keys, {k: i for i, k in enumerate(keys)}
    if not all(isinstance(k, int) and k >= 0 for k in keys):
        raise UserError(f"{dataset_name(dataset)}'s labels mix numbers and names ({keys[:4]}); use one kind")
    named = list(getattr(dataset, "classes", None) or [])
    count = max(keys) + 1
    names = [str(c) for c in named] if len(named) >= count else [str(i) for i in range(count)]
    return names, {i: i for i in range(len(names))}


def _geometry(kind: str, shape: tuple[int, ...], first: Any, cfg, default_size: int, dataset: Any,
              notes: list[str]) -> tuple[int, int, tuple, tuple]:
    """Channels, square side, and (for float inputs) the mean/std the user's transform normalised with."""
    from .images import guess_channels

    if kind == "float":
        c, h, w = shape
        if h != w:
            raise UserError(f"{dataset_name(dataset)}'s images are {h}x{w}; dlkit's models and checkpoints take square "
                            "images: add Resize((S, S)) or CenterCrop(S) to your transform")
        if cfg.image_size not in (None, h) or cfg.channels not in (None, c):
            raise UserError(f"--image-size/--channels cannot change tensors your transform made ({c}x{h}x{w}); "
                            "change the transform instead")
        mean, std = _normalize_of(getattr(dataset, "transform", None), c)
        if mean is None:
            mean, std = (0.0,) * c, (1.0,) * c
            notes.append("your transform has no Normalize: predict on image files will feed 0..1 values, as "
                         "ToTensor does")
        notes.append(f"predict on image files resizes them to {h}x{h} and normalises with mean {_fmt(mean)}, "
                     f"std {_fmt(std)}; other steps of your transform (crops, augmentation) are not replayed")
        return c, h, mean, std
    if kind == "pil":
        channels = cfg.channels or guess_channels(first)
        native = first.size[0] if first.size[0] == first.size[1] else None
    else:
        channels, native = cfg.channels or shape[0], shape[1] if shape[1] == shape[2] else None
    return channels, cfg.image_size or native or default_size, (), ()


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def _normalize_of(transform: Any, channels: int) -> tuple[tuple | None, tuple | None]:
    """The mean/std of the (last) Normalize inside a transform: torchvision v1/v2 Compose, nn.Sequential, or bare."""
    if transform is None:
        return None, None
    found = None
    stack = [transform]
    while stack:
        t = stack.pop(0)
        if type(t).__name__ == "Normalize" and hasattr(t, "mean") and hasattr(t, "std"):
            found = t
        stack.extend(getattr(t, "transforms", None) or (list(t.children()) if isinstance(t, torch.nn.Module) else []))
    if found is None:
        return None, None
    mean, std = _floats(found.mean), _floats(found.std)
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    return tuple(mean), tuple(std)


def _floats(values: Any) -> list[float]:
    """A Normalize's mean or std as Python floats, exactly as written (not rounded through float32)."""
    if isinstance(values, (int, float)):
        return [float(values)]
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.double().flatten().tolist()]
    return [float(v) for v in values]


def _channel_stats(samples: DatasetSamples) -> tuple[tuple, tuple]:
    from .transforms import channel_stats

    n = min(PROBE_ITEMS, len(samples))
    probe = samples.subset(torch.linspace(0, len(samples) - 1, n).round().long().unique())
    images = torch.stack([_Items(probe)[i][0] for i in range(len(probe))])
    return channel_stats(images)
