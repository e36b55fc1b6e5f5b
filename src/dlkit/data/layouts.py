"""Turn a --data SPEC (built-in name, directory or CSV) into a DataSource, detecting and naming the layout."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..registry import Registry
from . import cifar, idx
from .builtin import BUILTINS, DIGIT_CLASSES, FASHION_CLASSES, CIFAR10_CLASSES
from .folders import FileList, find_split_dirs, ignored_notes, label_folder_pairs, scan_folder
from .manifest import read_manifest
from .source import DataSource, Samples, check_classes, stratified_split

# Directory layouts, tried in order; each is (detect, load).
LAYOUTS: Registry = Registry("layout")


def open_source(data: str, data_dir: str | None = None, val_split: float = 0.2, seed: int = 0,
                allow_outside_root: bool = False) -> DataSource:
    """Open a dataset by built-in name, directory or CSV manifest."""
    if data in BUILTINS:
        return BUILTINS.get(data)(Path(data_dir) if data_dir else None, val_split, seed)
    path = Path(data).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_manifest(path, val_split, seed, allow_outside_root)
    if not path.exists():
        raise UserError(f"--data {data!r} is neither a built-in dataset ({', '.join(BUILTINS.names())}) nor an existing "
                        "folder or .csv file; check the path")
    if not path.is_dir():
        raise UserError(f"--data {data} is a file; pass a folder of images or a .csv manifest of path,label")
    for layout in LAYOUTS:
        detect, load = layout.obj
        if detect(path):
            source = load(path, val_split, seed)
            source.name, source.layout = str(data), layout.name
            return source
    raise UserError(f"no images found in {path}; expected {path}/<class>/<image>.jpg (see `dlkit datasets` for layouts)")


def _idx_load(path: Path, val_split: float, seed: int) -> DataSource:
    folder = next(p for p in (path, path / "raw") if idx.has_idx(p))
    train = Samples(*idx.read_idx_split(folder, "train")[::-1])
    has_test = idx.find_idx_file(folder, idx.IDX_FILES["test"][0]) is not None
    test = Samples(*idx.read_idx_split(folder, "test")[::-1]) if has_test else None
    if test is None:
        train_idx, val_idx = stratified_split(train.labels, val_split, seed)
        train, test = train.subset(train_idx), train.subset(val_idx)
    n_classes = int(train.labels.max()) + 1
    classes = _classes_txt(path) or (FASHION_CLASSES if "fashion" in path.resolve().name.lower() else
                                     DIGIT_CLASSES if n_classes <= 10 else [str(i) for i in range(n_classes)])
    return DataSource("", "", classes, train, test, test if has_test else None, channels=1)


def _cifar_load(path: Path, val_split: float, seed: int) -> DataSource:
    folder = cifar.find_cifar_dir(path)
    train = Samples(*cifar.read_cifar_split(folder, "train")[::-1])
    test = Samples(*cifar.read_cifar_split(folder, "test")[::-1])
    return DataSource("", "", cifar.read_class_names(folder) or CIFAR10_CLASSES, train, test, test, channels=3)


def _split_folders_load(path: Path, val_split: float, seed: int) -> DataSource:
    dirs = find_split_dirs(path)
    scans = {split: scan_folder(folder) for split, folder in dirs.items()}
    classes = sorted(set(scans["train"].names))
    samples = {split: _to_samples(scan, classes, dirs[split]) for split, scan in scans.items()}
    train = samples["train"]
    check_classes(classes, train.labels, str(dirs["train"]))
    if "val" not in samples and "test" not in samples:  # train/ alone: hold part of it out
        source = _split(scans["train"], classes, str(dirs["train"]), val_split, seed)
        source.notes.append(f"{path.name}/ holds only {dirs['train'].name}/: validation is a stratified "
                            f"{val_split:g} of it (--val-split)")
        return source
    val = samples["val"] if "val" in samples else samples["test"]
    source = DataSource("", "", classes, train, val, samples.get("test"))
    source.notes += ignored_notes(scans.values())
    return source


def _single_folder_load(path: Path, val_split: float, seed: int) -> DataSource:
    scan = scan_folder(path)
    classes = sorted(set(scan.names))
    return _split(scan, classes, str(path), val_split, seed)


def _from_manifest(csv_path: Path, val_split: float, seed: int, allow_outside_root: bool) -> DataSource:
    splits = read_manifest(csv_path, allow_outside_root)
    if "all" in splits and len(splits) > 1:
        raise UserError(f"{csv_path}: some rows have a split and some do not; give every row train, val or test")
    if "train" not in splits:
        merged = FileList()
        for scan in splits.values():
            merged.extend(scan)
        source = _split(merged, sorted(set(merged.names)), str(csv_path), val_split, seed)
    else:
        classes = sorted(set(splits["train"].names))
        samples = {s: _to_samples(scan, classes, csv_path) for s, scan in splits.items()}
        check_classes(classes, samples["train"].labels, str(csv_path))
        if "val" not in samples and "test" not in samples:
            raise UserError(f"{csv_path} has train rows but no val or test rows; add some or drop the split column")
        val = samples["val"] if "val" in samples else samples["test"]
        source = DataSource("", "", classes, samples["train"], val, samples.get("test"))
        source.notes += ignored_notes(splits.values())
    source.name, source.layout = str(csv_path), "CSV manifest"
    return source


def _split(scan: FileList, classes: list[str], where: str, val_split: float, seed: int) -> DataSource:
    samples = _to_samples(scan, classes, where)
    check_classes(classes, samples.labels, where)
    train_idx, val_idx = stratified_split(samples.labels, val_split, seed)
    source = DataSource("", "", classes, samples.subset(train_idx), samples.subset(val_idx))
    source.notes += ignored_notes([scan])
    return source


def _to_samples(scan: FileList, classes: list[str], where) -> Samples:
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(scan.names) - set(index))
    if unknown:
        raise UserError(f"{where} has class(es) {', '.join(unknown)} that the training split lacks; add training images for them")
    labels = torch.tensor([index[n] for n in scan.names], dtype=torch.int64)
    return Samples(labels, paths=list(scan.files))




def _classes_txt(path: Path) -> list[str] | None:
    f = path / "classes.txt"
    return [line.strip() for line in f.read_text().splitlines() if line.strip()] if f.is_file() else None


def _has_class_folders(path: Path) -> bool:
    return any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


LAYOUTS.register("MNIST-style IDX files", help="train-images-idx3-ubyte[.gz] + labels (and t10k-*), as MNIST/Fashion-MNIST")(
    (idx.has_idx, _idx_load))
LAYOUTS.register("CIFAR-10 python batches", help="data_batch_1..5 + test_batch (+ batches.meta), or cifar-10-batches-py/")(
    (lambda p: cifar.find_cifar_dir(p) is not None, _cifar_load))
LAYOUTS.register("train/val split folders", help="train/<class>/*.jpg + val/<class>/*.jpg (or test/; train/ alone: split --val-split); "
                                                   "label folders inside work too")(
    (lambda p: bool(find_split_dirs(p)), _split_folders_load))
LAYOUTS.register("label folders", help="X_image/<name>.jpg beside X_label/<name>.txt holding the class name; split --val-split")(
    (lambda p: bool(label_folder_pairs(p)), _single_folder_load))
LAYOUTS.register("class folders", help="<class>/*.jpg, one sub-folder per class; split --val-split (stratified)")(
    (_has_class_folders, _single_folder_load))
