"""Built-in datasets: bundled digits (offline), and MNIST, Fashion-MNIST, CIFAR-10 read from local files or downloaded."""
from __future__ import annotations

import contextlib
import errno
import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..registry import Registry
from . import cifar, idx
from .source import DataSource, Samples, stratified_split

BUILTINS: Registry = Registry("dataset")

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGIT_CLASSES = [str(i) for i in range(10)]


def default_data_dir(name: str) -> Path:
    base = os.environ.get("DLKIT_DATA_DIR") or Path.home() / ".cache" / "dlkit" / "datasets"
    return Path(base) / name


@BUILTINS.register("digits", help="8x8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes); offline")
def load_digits(data_dir: Path | None, val_split: float, seed: int) -> DataSource:
    pixels, target = _sklearn_digits()
    images = torch.from_numpy(np.round(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(target.astype(np.int64))
    train_idx, val_idx = stratified_split(labels, val_split, seed)
    all_samples = Samples(labels, images)
    return DataSource("digits", "built-in (scikit-learn)", DIGIT_CLASSES,
                      all_samples.subset(train_idx), all_samples.subset(val_idx), channels=1)


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits file, read straight from its wheel: importing sklearn.datasets (scipy and all) took
    longer than training on it. Falls back to sklearn's own loader if the file is not where it was."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1]
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return bunch.data, bunch.target


def _idx_builtin(name: str, torchvision_name: str, classes: list[str], mean: float, std: float):
    def load(data_dir: Path | None, val_split: float, seed: int) -> DataSource:
        folder = Path(data_dir) if data_dir else default_data_dir(name)
        found = _idx_folder(folder, torchvision_name)
        if found is None:
            _download_torchvision(torchvision_name, folder, name, "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                                  "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")
            found = _idx_folder(folder, torchvision_name)
        train, test = _as_samples(*idx.read_idx_split(found, "train")), _as_samples(*idx.read_idx_split(found, "test"))
        return DataSource(name, f"built-in ({found})", classes, train, test, test, channels=1, mean=(mean,), std=(std,))

    return load


def _as_samples(images: torch.Tensor, labels: torch.Tensor) -> Samples:
    return Samples(labels, images)


def _idx_folder(folder: Path, torchvision_name: str) -> Path | None:
    for candidate in (folder, folder / torchvision_name / "raw"):
        if idx.has_idx(candidate):
            return candidate
    return None


def _download_torchvision(torchvision_name: str, folder: Path, name: str, expected: str) -> None:
    import torchvision.datasets as tvd

    with _fetching(name, folder, expected):
        for train in (True, False):
            getattr(tvd, torchvision_name)(str(folder), train=train, download=True)


# errnos that mean this machine's disk or permissions, not the network, stopped the download
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.ENOTDIR,
                 errno.EISDIR, errno.ENAMETOOLONG}


@contextlib.contextmanager
def _fetching(name: str, folder: Path, expected: str):
    """Turn a failed download into a one-line error that names its real cause: a full disk or a read-only folder
    is not a network problem, and a user cannot act on "download failed" when it was one."""
    try:
        yield
    except OSError as e:
        if e.errno not in _LOCAL_ERRNOS:
            raise _download_failed(name, folder, expected, e) from None
        where = f"{e.filename}: " if e.filename else ""
        raise UserError(f"{name}: could not write its files in {folder} ({where}{e.strerror}); free space or fix "
                        f"permissions there, or pass --data-dir to a folder holding {expected}") from None
    except Exception as e:  # torchvision wraps network errors in RuntimeError("Error downloading ..."); others too
        raise _download_failed(name, folder, expected, e) from None


def _download_failed(name: str, folder: Path, expected: str, error: Exception) -> UserError:
    # torchvision's message ends with the underlying error ("Tried <mirror>, got: <urlopen error ...>")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = f"{type(error).__name__}: {lines[-1][:160]}" if lines else type(error).__name__
    return UserError(f"{name} files not found in {folder} and the download failed ({reason}); "
                     f"put {expected} in {folder} or pass --data-dir")


BUILTINS.register("mnist", help="MNIST handwritten digits, 28x28 grayscale, 60k train / 10k test")(
    _idx_builtin("mnist", "MNIST", DIGIT_CLASSES, 0.1307, 0.3081))
BUILTINS.register("fashion-mnist", help="Fashion-MNIST clothing, 28x28 grayscale, 60k train / 10k test")(
    _idx_builtin("fashion-mnist", "FashionMNIST", FASHION_CLASSES, 0.2860, 0.3530))


@BUILTINS.register("cifar10", help="CIFAR-10, 32x32 colour, 50k train / 10k test")
def load_cifar10(data_dir: Path | None, val_split: float, seed: int) -> DataSource:
    folder = Path(data_dir) if data_dir else default_data_dir("cifar10")
    found = cifar.find_cifar_dir(folder)
    if found is None:
        _download_cifar10(folder)
        found = cifar.find_cifar_dir(folder)
    train = _as_samples(*cifar.read_cifar_split(found, "train"))
    test = _as_samples(*cifar.read_cifar_split(found, "test"))
    classes = cifar.read_class_names(found) or CIFAR10_CLASSES
    return DataSource("cifar10", f"built-in ({found})", classes, train, test, test, channels=3,
                      mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


def _download_cifar10(folder: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_url

    with _fetching("cifar10", folder, "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"):
        download_url(CIFAR10.url, str(folder), CIFAR10.filename, CIFAR10.tgz_md5)
        with tarfile.open(folder / CIFAR10.filename) as archive:
            archive.extractall(folder, filter="data")  # "data" refuses ../ and absolute paths
