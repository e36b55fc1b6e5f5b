"""Data layouts and decoding: every layout open_source detects, messy folders, awkward and broken images,
bad input (always a UserError), fuzzed parsers, batching and augmentation. All data is tiny and generated here."""
from __future__ import annotations

import csv
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dlkit.data import PreprocessSpec, Samples, open_source, prepare_data, prepare_split
from dlkit.data.augment import BatchAugment
from dlkit.data.builtin import CIFAR10_CLASSES, DIGIT_CLASSES
from dlkit.data.cifar import safe_unpickle
from dlkit.data.idx import parse_idx
from dlkit.data.loaders import TensorBatches
from dlkit.data.manifest import read_manifest
from dlkit.errors import UserError

IDX_LAYOUT = "MNIST-style IDX files"
CIFAR_LAYOUT = "CIFAR-10 python batches"
SPLIT_LAYOUT = "train/val split folders"
LABEL_LAYOUT = "label folders"
CLASS_LAYOUT = "class folders"
CSV_LAYOUT = "CSV manifest"


# ----------------------------------------------------------------------------------------------------------------
# helpers that write tiny files

def save_image(path, mode="RGB", size=(4, 6), color=None, pixels=None, fmt=None, **save_kw):
    """Write an image (PIL size = (width, height)) to path, creating folders; pixels (HxW[xC] array) win over color."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is not None:
        img = Image.fromarray(pixels)
        if img.mode != mode:
            img = img.convert(mode)
    else:
        img = Image.new(mode, size, color if color is not None else 0)
    img.save(path, format=fmt, **save_kw)
    return path


def make_class_tree(root, counts: dict[str, int], ext=".png"):
    """root/<class>/<class>_<i><ext>, each image a flat colour so they decode identically."""
    for name, n in counts.items():
        for i in range(n):
            save_image(root / name / f"{name}_{i}{ext}", color=(40 * i % 256, 90, 200))
    return root


def image_names(samples: Samples) -> list[str]:
    return [p.name for p in samples.paths]


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array in IDX format: magic 0x0000 08 <ndim>, big-endian dims, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path, array: np.ndarray, gz: bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_idx_dir(folder, gz=False, n_train=20, n_test=6, classes=4, hw=(5, 7)):
    """MNIST-style files with images whose first pixel is their label (to check labels travel with images)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if n == 0:
            continue
        labels = np.arange(n, dtype=np.uint8) % classes
        images = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
        images[:, 0, 0] = labels
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return folder


def cifar_batch(n: int, first_label: int = 0, classes: int = 3) -> dict:
    labels = [(first_label + i) % classes for i in range(n)]
    data = np.random.default_rng(first_label).integers(0, 256, (n, 3072), dtype=np.uint8)
    data[:, 0] = labels  # the first red pixel of each image is its label
    return {b"data": data, b"labels": labels, b"batch_label": b"tiny"}


def make_cifar_dir(folder, label_names=("apple", "pear", "plum"), per_batch=2, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(per_batch, i), protocol=protocol))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(per_batch, 0), protocol=protocol))
    if label_names is not None:
        meta = {b"label_names": [n.encode() for n in label_names], b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


def write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def decode_one(path, channels: int, size: int) -> torch.Tensor:
    """One file through prepare_split (the in-memory path): uint8 CxSxS."""
    spec = PreprocessSpec(size, channels, (0.0,) * channels, (1.0,) * channels, ("a",))
    decoded, notes = prepare_split(Samples(torch.zeros(1, dtype=torch.int64), paths=[path]), spec, cache="ram")
    assert notes == [] and decoded.images.dtype == torch.uint8
    assert decoded.images.shape == (1, channels, size, size)
    return decoded.images[0]


# ----------------------------------------------------------------------------------------------------------------
# 1. every layout is detected and named

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("sub", ["", "raw"], ids=["top", "raw-subfolder"])
def test_idx_layout(tmp_path, gz, sub):
    make_idx_dir(tmp_path / "digits" / sub if sub else tmp_path / "digits", gz=gz)
    source = open_source(str(tmp_path / "digits"))
    assert source.layout == IDX_LAYOUT
    assert source.classes == DIGIT_CLASSES and source.channels == 1
    assert source.train.images.shape == (20, 1, 5, 7) and source.train.images.dtype == torch.uint8
    assert source.val.images.shape == (6, 1, 5, 7)
    assert source.test is source.val  # t10k files are the test split
    for split in (source.train, source.val):
        assert torch.equal(split.images[:, 0, 0, 0].long(), split.labels)


def test_idx_dotted_names_and_classes_txt(tmp_path):
    folder = make_idx_dir(tmp_path / "d", classes=3)
    for f in folder.iterdir():  # train-images.idx3-ubyte, as some mirrors name them
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    (folder / "classes.txt").write_text("zero\none\ntwo\n")
    source = open_source(str(folder))
    assert source.layout == IDX_LAYOUT and source.classes == ["zero", "one", "two"]


def test_idx_without_test_files_is_split_stratified(tmp_path):
    make_idx_dir(tmp_path / "d", n_train=20, n_test=0, classes=4)
    source = open_source(str(tmp_path / "d"), val_split=0.2, seed=3)
    assert source.layout == IDX_LAYOUT and source.test is None
    assert len(source.train) == 16 and len(source.val) == 4
    assert sorted(source.val.labels.tolist()) == [0, 1, 2, 3]  # one of each class held out


def test_idx_prepare_data_converts_in_memory(tmp_path):
    source = open_source(str(make_idx_dir(tmp_path / "d")))
    data = prepare_data(source, image_size=8, channels=3, default_size=32)
    assert data.in_memory
    assert data.train.images.shape == (20, 3, 8, 8) and data.val.images.shape == (6, 3, 8, 8)
    assert data.spec.image_size == 8 and data.spec.channels == 3 and len(data.spec.mean) == 3
    native = prepare_data(source, image_size=None, channels=None, default_size=32)
    assert native.train.images.shape == (20, 1, 7, 7)  # native width, centre-cropped square


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar_layout_uses_meta_class_names(tmp_path, sub):
    make_cifar_dir(tmp_path / "c" / sub if sub else tmp_path / "c")
    source = open_source(str(tmp_path / "c"))
    assert source.layout == CIFAR_LAYOUT
    assert source.classes == ["apple", "pear", "plum"] and source.channels == 3
    assert source.train.images.shape == (10, 3, 32, 32) and source.val.images.shape == (2, 3, 32, 32)
    assert source.test is source.val
    assert torch.equal(source.train.images[:, 0, 0, 0].long(), source.train.labels)
    data = prepare_data(source, image_size=16, channels=1, default_size=32)
    assert data.train.images.shape == (10, 1, 16, 16) and data.train.images.dtype == torch.uint8


def test_cifar_without_meta_uses_cifar10_names(tmp_path):
    source = open_source(str(make_cifar_dir(tmp_path / "c", label_names=None)))
    assert source.layout == CIFAR_LAYOUT and source.classes == CIFAR10_CLASSES


def test_cifar_batches_pickled_with_protocol_5(tmp_path):
    source = open_source(str(make_cifar_dir(tmp_path / "c", protocol=5)))
    assert source.train.images.shape == (10, 3, 32, 32)


@pytest.mark.parametrize("val_name", ["val", "test", "validation"])
def test_split_folders(tmp_path, val_name):
    make_class_tree(tmp_path / "d" / "train", {"cat": 3, "dog": 2})
    make_class_tree(tmp_path / "d" / val_name, {"cat": 1, "dog": 1})
    source = open_source(str(tmp_path / "d"))
    assert source.layout == SPLIT_LAYOUT and source.classes == ["cat", "dog"]
    assert image_names(source.train) == ["cat_0.png", "cat_1.png", "cat_2.png", "dog_0.png", "dog_1.png"]
    assert source.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert image_names(source.val) == ["cat_0.png", "dog_0.png"] and source.val.labels.tolist() == [0, 1]
    assert all(val_name in p.parent.parent.name for p in source.val.paths)
    assert (source.test is not None) == (val_name == "test")


def test_split_folders_val_class_missing_from_train_is_an_error(tmp_path):
    make_class_tree(tmp_path / "d" / "train", {"cat": 2, "dog": 2})
    make_class_tree(tmp_path / "d" / "val", {"cat": 1, "owl": 1})
    with pytest.raises(UserError, match="owl"):
        open_source(str(tmp_path / "d"))


@pytest.mark.parametrize("val_split,n_val_per_class", [(0.2, 2), (0.5, 5)])
def test_class_folders_stratified_split(tmp_path, val_split, n_val_per_class):
    root = make_class_tree(tmp_path / "d", {"ant": 10, "bee": 10, "wasp": 10})
    source = open_source(str(root), val_split=val_split, seed=1)
    assert source.layout == CLASS_LAYOUT and source.classes == ["ant", "bee", "wasp"] and source.test is None
    assert len(source.val) == 3 * n_val_per_class and len(source.train) == 30 - 3 * n_val_per_class
    for cls in range(3):
        assert (source.val.labels == cls).sum() == n_val_per_class
        assert (source.train.labels == cls).sum() == 10 - n_val_per_class
    train, val = set(source.train.paths), set(source.val.paths)
    assert not train & val and len(train | val) == 30
    for split in (source.train, source.val):  # labels still belong to their files
        assert all(source.classes[int(y)] == p.parent.name for p, y in zip(split.paths, split.labels))

    again = open_source(str(root), val_split=val_split, seed=1)
    assert again.val.paths == source.val.paths and torch.equal(again.val.labels, source.val.labels)
    others = [set(open_source(str(root), val_split=val_split, seed=s).val.paths) for s in range(2, 6)]
    assert any(o != val for o in others)


def test_class_folders_class_of_one_image_stays_in_train(tmp_path):
    source = open_source(str(make_class_tree(tmp_path / "d", {"a": 1, "b": 4})), val_split=0.5)
    assert source.train.labels.tolist().count(0) == 1 and 0 not in source.val.labels.tolist()


def write_label_pair(folder, stem, image_name, label, ext=".jpg"):
    save_image(folder / f"{stem}_image" / f"{image_name}{ext}", color=(200, 10, 10))
    label_file = folder / f"{stem}_label" / f"{image_name}.txt"
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text(label + "\n", encoding="utf-8")


def make_label_folders(folder, n=4):
    for i in range(n):
        write_label_pair(folder, "ants", f"a{i}", "ants")
        write_label_pair(folder, "bees", f"b{i}", "bees")
    write_label_pair(folder, "mixed", "m0", "bees")  # the .txt decides the class, not the folder name
    return folder


def test_label_folders_top_level(tmp_path):
    root = make_label_folders(tmp_path / "d")
    save_image(root / "ants_image" / "orphan.jpg")  # no label file: ignored and counted
    source = open_source(str(root), val_split=0.25, seed=0)
    assert source.layout == LABEL_LAYOUT and source.classes == ["ants", "bees"]
    assert len(source.train) + len(source.val) == 9
    for split in (source.train, source.val):
        assert set(split.labels.tolist()) == {0, 1}
        for path, label in zip(split.paths, split.labels):
            expected = (path.parent.parent / path.parent.name.replace("_image", "_label") / f"{path.stem}.txt").read_text().strip()
            assert source.classes[int(label)] == expected
    assert "orphan.jpg" not in image_names(source.train) + image_names(source.val)
    assert any("ignored 1 image(s) without a label file" in note and str(root / "ants_image" / "orphan.jpg") in note
               for note in source.notes)


def test_label_folders_inside_train_and_val(tmp_path):
    make_label_folders(tmp_path / "d" / "train", n=3)
    make_label_folders(tmp_path / "d" / "val", n=1)
    source = open_source(str(tmp_path / "d"))
    assert source.layout == SPLIT_LAYOUT and source.classes == ["ants", "bees"]
    assert len(source.train) == 7 and len(source.val) == 3
    assert source.val.labels.tolist().count(1) == 2  # b0 and mixed/m0


def test_label_folders_empty_label_file_is_an_error(tmp_path):
    root = make_label_folders(tmp_path / "d", n=2)
    (root / "ants_label" / "a0.txt").write_text("  \n")
    with pytest.raises(UserError, match="a0.txt is empty"):
        open_source(str(root))


def make_csv_images(root) -> list[tuple[str, str]]:
    """Six images under root/imgs/ (names with spaces); returns their (path relative to root, label) rows."""
    rows = [(f"imgs/{name} {cls}.png", cls) for name, cls in
            [("a1", "cat"), ("a2", "cat"), ("a3", "cat"), ("b1", "dog"), ("b2", "dog"), ("b3", "dog")]]
    for rel, _ in rows:
        save_image(root / rel, color=(10, 20, 30))
    return rows


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_csv_manifest_without_split_column(tmp_path, monkeypatch, header):
    rows = make_csv_images(tmp_path / "lists")
    csv_path = write_csv(tmp_path / "lists" / "data.csv", ([("path", "label")] if header else []) + rows)
    monkeypatch.chdir(tmp_path)  # paths are relative to the CSV, not to the working directory
    source = open_source(str(csv_path), val_split=0.34, seed=0)
    assert source.layout == CSV_LAYOUT and source.classes == ["cat", "dog"]
    assert len(source.train) == 4 and len(source.val) == 2 and set(source.val.labels.tolist()) == {0, 1}
    assert all(p.is_file() and p.parent == (tmp_path / "lists" / "imgs").resolve() for p in source.train.paths)
    data = prepare_data(source, image_size=4, channels=3, default_size=32)
    assert data.train.images.shape == (4, 3, 4, 4)


def test_csv_manifest_with_split_column(tmp_path):
    rows = make_csv_images(tmp_path)
    splits = ["train", "train", "valid", "train", "train", "VAL"]
    csv_path = write_csv(tmp_path / "m.csv", [("path", "label", "split")] +
                         [(p, c, s) for (p, c), s in zip(rows, splits)] + [("imgs/gone.png", "cat", "train")])
    source = open_source(str(csv_path))
    assert source.layout == CSV_LAYOUT and source.test is None
    assert image_names(source.train) == ["a1 cat.png", "a2 cat.png", "b1 dog.png", "b2 dog.png"]
    assert image_names(source.val) == ["a3 cat.png", "b3 dog.png"] and source.val.labels.tolist() == [0, 1]
    assert any("manifest row(s) whose file does not exist: " in note and "gone.png" in note for note in source.notes)


def test_csv_manifest_with_test_split(tmp_path):
    rows = make_csv_images(tmp_path)
    csv_path = write_csv(tmp_path / "m.csv", [(p, c, "test" if p.startswith("imgs/a3") or p.startswith("imgs/b3")
                                                else "train") for p, c in rows])
    source = open_source(str(csv_path))
    assert source.test is not None and len(source.test) == 2 and source.val is source.test


# ----------------------------------------------------------------------------------------------------------------
# 2. messy folders

def test_messy_class_folders(tmp_path):
    root = tmp_path / "messy data"
    cafe, unicode_cls = "café au lait", "Ünïcødé ✓ 猫"
    save_image(root / cafe / "PHOTO 1.JPG", fmt="JPEG")
    save_image(root / cafe / "photo 2.Png", fmt="PNG")
    save_image(root / cafe / "deep" / "nested één.jpeg", fmt="JPEG")
    save_image(root / unicode_cls / "bild ü 1.png")
    save_image(root / unicode_cls / "bild ü 2.PNG", fmt="PNG")
    save_image(root / unicode_cls / "bild ü 3.webp")
    # ignored silently: hidden files and folders
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / cafe / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    save_image(root / cafe / ".hidden" / "secret.png")
    save_image(root / cafe / "._PHOTO 1.JPG")
    save_image(root / ".thumbs" / "t.png")
    save_image(root / cafe / "anim.gif", mode="P")  # a GIF is an image (its first frame), in training as in predict
    # ignored and counted: non-image files
    (root / unicode_cls / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("top-level file")

    source = open_source(str(root), val_split=0.34, seed=0)
    assert source.layout == CLASS_LAYOUT
    assert source.classes == sorted([cafe, unicode_cls])
    found = sorted(image_names(source.train) + image_names(source.val))
    assert found == sorted(["PHOTO 1.JPG", "photo 2.Png", "nested één.jpeg", "bild ü 1.png", "bild ü 2.PNG",
                            "bild ü 3.webp", "anim.gif"])
    note = " ".join(source.notes)
    assert "ignored 2 non-image file(s)" in note
    assert ".txt" in note and ".md" in note and ".gif" not in note
    data = prepare_data(source, image_size=4, channels=3, default_size=32)
    assert len(data.train) + len(data.val) == 7 and not any("unreadable" in n for n in data.notes)


def test_capitalised_split_folders(tmp_path):
    make_class_tree(tmp_path / "d" / "Train", {"x": 2, "y": 2})
    make_class_tree(tmp_path / "d" / "Val", {"x": 1, "y": 1})
    source = open_source(str(tmp_path / "d"))
    assert source.layout == SPLIT_LAYOUT and len(source.train) == 4 and len(source.val) == 2


# ----------------------------------------------------------------------------------------------------------------
# 3. awkward images decode to the requested channels and size

def half_and_half(h, w, left, right):
    a = np.full((h, w), left, dtype=np.uint8)
    a[:, w // 2:] = right
    return a


def write_awkward_images(folder) -> list:
    """One file of each awkward kind (4 wide x 6 high unless noted); returns the paths."""
    rgba = np.zeros((6, 4, 4), np.uint8)
    rgba[:, :2] = (255, 0, 0, 255)  # left half opaque red, right half fully transparent black
    palette = Image.new("P", (4, 6), 1)
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    folder.mkdir(parents=True, exist_ok=True)
    palette.save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return [
        save_image(folder / "gray.png", mode="L", color=100),
        save_image(folder / "rgba.png", mode="RGBA", pixels=rgba),
        folder / "palette.png",
        save_image(folder / "cmyk.jpg", mode="CMYK", color=(0, 0, 0, 0), fmt="JPEG"),
        save_image(folder / "deep.png", mode="I;16", pixels=half_and_half(6, 4, 0, 1).astype(np.uint16) * 65535),
        save_image(folder / "rotated.jpg", mode="RGB", pixels=half_and_half(8, 16, 0, 255), fmt="JPEG",
                   exif=exif.tobytes(), quality=95),
        save_image(folder / "one_bit.png", mode="1", color=1),
        save_image(folder / "gray_alpha.png", mode="LA", color=(50, 0)),
    ]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [4, 9])
def test_awkward_images_decode_via_prepare_data(tmp_path, channels, size):
    n = len(write_awkward_images(tmp_path / "d" / "train" / "odd"))
    make_class_tree(tmp_path / "d" / "train", {"plain": 2})
    write_awkward_images(tmp_path / "d" / "val" / "odd")
    make_class_tree(tmp_path / "d" / "val", {"plain": 1})
    source = open_source(str(tmp_path / "d"))
    data = prepare_data(source, image_size=size, channels=channels, default_size=32, cache="ram", strict=True)
    assert data.train.images.shape == (n + 2, channels, size, size) and data.train.images.dtype == torch.uint8
    assert data.val.images.shape == (n + 1, channels, size, size)
    assert len(data.spec.mean) == channels and all(0 <= m <= 1 for m in data.spec.mean)


def test_awkward_images_on_the_file_path(tmp_path):
    write_awkward_images(tmp_path / "d" / "a")
    make_class_tree(tmp_path / "d", {"b": 3})
    source = open_source(str(tmp_path / "d"))
    data = prepare_data(source, image_size=5, channels=None, default_size=32, cache="off", strict=True)
    assert not data.in_memory and data.spec.channels == 3  # RGB images among the first files
    assert len(data.train.paths) == len(source.train) and len(data.val.paths) == len(source.val)


@pytest.fixture
def awkward(tmp_path):
    return {p.stem: p for p in write_awkward_images(tmp_path / "odd")}


def test_grayscale_repeated_to_rgb(awkward):
    out = decode_one(awkward["gray"], 3, 4)
    assert (out == 100).all()


def test_rgba_transparent_becomes_white(awkward):
    out = decode_one(awkward["rgba"], 3, 4)
    assert out[:, :, :2].flatten(1).T.unique(dim=0).tolist() == [[255, 0, 0]]
    assert (out[:, :, 2:] == 255).all()


def test_gray_alpha_transparent_becomes_white(awkward):
    assert (decode_one(awkward["gray_alpha"], 1, 4) == 255).all()


def test_palette_colours(awkward):
    out = decode_one(awkward["palette"], 3, 4)
    assert out[:, 0, 0].tolist() == [200, 100, 50] and (out == out[:, :1, :1]).all()


def test_cmyk_jpeg_becomes_rgb(awkward):
    out = decode_one(awkward["cmyk"], 3, 4)
    assert (out >= 250).all()  # CMYK (0,0,0,0) is white paper


def test_16_bit_png_scaled_to_8_bits(awkward):
    assert Image.open(awkward["deep"]).mode.startswith("I")
    out = decode_one(awkward["deep"], 1, 4)
    assert out[0, :, :2].unique().tolist() == [0] and out[0, :, 2:].unique().tolist() == [255]


def test_dark_16_bit_png_is_scaled_too(tmp_path):
    path = save_image(tmp_path / "dark.png", mode="I;16", pixels=np.full((4, 4), 255, np.uint16))
    assert decode_one(path, 1, 4).max() <= 1  # 255 / 65535 of full scale


def test_one_bit_image(awkward):
    assert (decode_one(awkward["one_bit"], 3, 4) == 255).all()


def test_exif_orientation_applied_before_resize(awkward):
    stored = Image.open(awkward["rotated"])
    assert stored.size == (16, 8)  # wide as stored: left half black, right half white
    out = decode_one(awkward["rotated"], 1, 8)[0].int()
    # rotated 90 degrees clockwise it is 8 wide x 16 high: the black half is on top
    assert (out[:4] < 64).all() and (out[4:] > 192).all()
    assert (out == out[:, :1]).all()  # every row uniform: no left/right split left
    small = decode_one(awkward["rotated"], 1, 4)[0].int()  # downscaled too (JPEG draft + resize)
    assert (small[:2] < 64).all() and (small[2:] > 192).all()


# ----------------------------------------------------------------------------------------------------------------
# 4. unreadable images are skipped and named, or refused with strict

def make_folder_with_broken_images(root):
    make_class_tree(root / "train", {"cat": 3, "dog": 3})
    make_class_tree(root / "val", {"cat": 1, "dog": 1})
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = save_image(root / "good.jpg", pixels=noise, fmt="JPEG").read_bytes()
    (root / "good.jpg").unlink()
    (root / "train" / "cat" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "train" / "dog" / "x.jpg").write_bytes(b"")
    (root / "train" / "dog" / "y.png").write_text("this is not a png\n")
    return root


@pytest.mark.parametrize("cache", ["ram", "off"])
def test_unreadable_images_are_skipped_and_named(tmp_path, cache):
    source = open_source(str(make_folder_with_broken_images(tmp_path / "d")))
    assert len(source.train) == 9
    data = prepare_data(source, image_size=4, channels=3, default_size=32, cache=cache)
    assert len(data.train) == 6 and len(data.val) == 2
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    kept = data.train.paths if data.train.paths is not None else []
    assert not {"truncated.jpg", "x.jpg", "y.png"} & {p.name for p in kept}
    if cache == "ram":
        assert data.train.images.shape == (6, 3, 4, 4)
    note = " ".join(n for n in data.notes if "unreadable" in n)
    assert "skipped 3 unreadable image(s)" in note
    assert "truncated.jpg" in note and "x.jpg" in note and "y.png" in note


def test_unreadable_images_with_strict_raise(tmp_path):
    source = open_source(str(make_folder_with_broken_images(tmp_path / "d")))
    with pytest.raises(UserError, match="3 unreadable image"):
        prepare_data(source, image_size=4, channels=3, default_size=32, strict=True)


# ----------------------------------------------------------------------------------------------------------------
# 5. bad input: a UserError with a helpful message

def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="neither a built-in dataset.*check the path"):
        open_source(str(tmp_path / "nope"))


def test_plain_file_that_is_not_a_csv(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        open_source(str(tmp_path / "data.txt"))


@pytest.mark.parametrize("content", ["empty", "hidden-only", "files-only", "empty-class-folders"])
def test_folder_without_images(tmp_path, content):
    root = tmp_path / "d"
    root.mkdir()
    if content == "hidden-only":
        save_image(root / ".hidden" / "a.png")
        (root / ".DS_Store").write_bytes(b"x")
    elif content == "files-only":
        save_image(root / "a.png")
    elif content == "empty-class-folders":
        (root / "cat").mkdir()
        (root / "dog").mkdir()
        (root / "dog" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images found"):
        open_source(str(root))


def test_single_class_folder(tmp_path):
    with pytest.raises(UserError, match="only one class \\(cat\\).*at least two"):
        open_source(str(make_class_tree(tmp_path / "d", {"cat": 4})))


def test_single_class_split_folders(tmp_path):
    make_class_tree(tmp_path / "d" / "train", {"cat": 4})
    make_class_tree(tmp_path / "d" / "val", {"cat": 1})
    with pytest.raises(UserError, match="only one class"):
        open_source(str(tmp_path / "d"))


@pytest.mark.parametrize("outside", ["../x.png", "sub/../../x.png", "absolute"])
def test_csv_path_outside_its_folder(tmp_path, outside):
    victim = save_image(tmp_path / "x.png")  # it exists: refused for where it is, not for being missing
    root = tmp_path / "data"
    rows = make_csv_images(root)
    rows.append((str(victim) if outside == "absolute" else outside, "dog"))
    with pytest.raises(UserError, match="outside the manifest's folder"):
        open_source(str(write_csv(root / "m.csv", rows)))


@pytest.mark.parametrize("rows", [[("imgs/a.png",)], [("path",), ("imgs/a.png",)], [("imgs/a.png", "  ")]],
                         ids=["no-label", "header-without-label", "blank-label"])
def test_csv_missing_label_column(tmp_path, rows):
    save_image(tmp_path / "imgs" / "a.png")
    with pytest.raises(UserError, match="expected path,label"):
        open_source(str(write_csv(tmp_path / "m.csv", rows)))


def test_csv_unknown_split_name(tmp_path):
    rows = make_csv_images(tmp_path)
    csv_path = write_csv(tmp_path / "m.csv", [(p, c, "holdout") for p, c in rows])
    with pytest.raises(UserError, match="unknown split name.*holdout"):
        open_source(str(csv_path))


def test_csv_train_rows_without_val_rows(tmp_path):
    rows = make_csv_images(tmp_path)
    with pytest.raises(UserError, match="no val or test rows"):
        open_source(str(write_csv(tmp_path / "m.csv", [(p, c, "train") for p, c in rows])))


def test_csv_not_utf8(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"\xff\xfe\x00\x00garbage\x80\x81,label\n")
    with pytest.raises(UserError, match="not a readable CSV"):
        open_source(str(tmp_path / "m.csv"))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo hacked > '{self.marker}'",)


@pytest.mark.parametrize("target", ["data_batch_1", "batches.meta"])
def test_cifar_pickle_that_runs_code_is_refused(tmp_path, capfd, target):
    folder = make_cifar_dir(tmp_path / "c")
    marker = tmp_path / "hacked"
    (folder / target).write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0], b"label_names": _Evil(marker)}))
    with pytest.raises(UserError, match=f"{target} is not a CIFAR-10 python batch.*refusing to load"):
        open_source(str(folder))
    assert not marker.exists() and "hacked" not in capfd.readouterr().out


@pytest.mark.parametrize("damage", ["not-a-dict", "wrong-width", "label-count", "missing-batch"])
def test_cifar_malformed_batches(tmp_path, damage):
    folder = make_cifar_dir(tmp_path / "c")
    batch = cifar_batch(2)
    if damage == "not-a-dict":
        batch = [1, 2, 3]
    elif damage == "wrong-width":
        batch[b"data"] = np.zeros((2, 100), np.uint8)
    elif damage == "label-count":
        batch[b"labels"] = [0]
    if damage == "missing-batch":
        (folder / "data_batch_4").unlink()
        match = "lacks CIFAR-10 batch file.*data_batch_4"
    else:
        (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
        match = "data_batch_2 is not a CIFAR-10 batch"
    with pytest.raises(UserError, match=match):
        open_source(str(folder))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_truncated_idx_file(tmp_path, gz):
    folder = make_idx_dir(tmp_path / "d", gz=gz)
    images = next(folder.glob("train-images*"))
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated|damaged gzip"):
        open_source(str(folder))


@pytest.mark.parametrize("damage", ["bad-magic", "short-header", "label-count", "missing-labels"])
def test_damaged_idx_files(tmp_path, damage):
    folder = make_idx_dir(tmp_path / "d")
    images, labels = folder / "train-images-idx3-ubyte", folder / "train-labels-idx1-ubyte"
    if damage == "bad-magic":
        images.write_bytes(b"\x12\x34" + images.read_bytes()[2:])
    elif damage == "short-header":
        images.write_bytes(images.read_bytes()[:9])
    elif damage == "label-count":
        labels.write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    else:
        labels.unlink()
    with pytest.raises(UserError, match={"bad-magic": "bad magic", "short-header": "truncated IDX header",
                                         "label-count": "do not match", "missing-labels": "lacks"}[damage]):
        open_source(str(folder))


def test_corrupt_gzip_idx_file(tmp_path):
    folder = make_idx_dir(tmp_path / "d", gz=True, hw=(16, 16))
    images = folder / "train-images-idx3-ubyte.gz"
    data = bytearray(images.read_bytes())
    data[10] = 0b111  # the first deflate block (after the 10-byte gzip header) gets the reserved block type 3
    images.write_bytes(bytes(data))
    with pytest.raises(UserError):
        open_source(str(folder))


def test_idx_header_whose_size_overflows():
    with pytest.raises(UserError):
        parse_idx(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2**31, 2**31, 4))


# ----------------------------------------------------------------------------------------------------------------
# 6. fuzzing the two parsers of foreign bytes

def idx_like():
    """Bytes that often get past the magic number: a valid-looking header with small dims and a near-right payload."""
    @st.composite
    def build(draw):
        code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07]))
        dims = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4))
        itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
        n = int(np.prod(dims)) * itemsize if dims else 0
        payload = draw(st.binary(min_size=max(0, n - 2), max_size=n + 2))
        return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload
    return build()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64), idx_like()))
def test_fuzz_parse_idx(data):
    try:
        result = parse_idx(data, "fuzz")
    except UserError:
        return
    assert isinstance(result, np.ndarray) and result.ndim == data[3]
    assert result.nbytes == len(data) - 4 - 4 * data[3]


VALID_PICKLE = pickle.dumps(cifar_batch(2), protocol=2)


@st.composite
def mutated_pickle(draw):
    data = bytearray(VALID_PICKLE)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=128), st.binary(max_size=64).map(lambda b: b"\x80\x02" + b), mutated_pickle()))
def test_fuzz_safe_unpickle(data):
    try:
        safe_unpickle(data, "fuzz")
    except UserError as e:
        assert "fuzz is not a CIFAR-10 python batch" in str(e)


def test_safe_unpickle_reads_a_real_batch():
    d = safe_unpickle(VALID_PICKLE, "ok")
    assert d[b"data"].shape == (2, 3072) and d[b"labels"] == [0, 1]


# ----------------------------------------------------------------------------------------------------------------
# 7. batching and augmentation

def numbered_samples(n=23):
    """Image i is filled with the value i, so every batch says which samples it holds."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 3, 3).contiguous()
    return Samples(torch.arange(n), images)


def epoch_order(batches) -> list[int]:
    order = []
    for images, labels in batches:
        assert torch.equal(images[:, 0, 0, 0].long(), labels)  # images and labels stay together
        order += labels.tolist()
    return order


def test_tensor_batches_shuffle_each_sample_once_per_epoch():
    batches = TensorBatches(numbered_samples(23), batch_size=5, shuffle=True, device=torch.device("cpu"), seed=7)
    assert len(batches) == 5 and batches.num_samples == 23
    first, second = epoch_order(batches), epoch_order(batches)
    assert sorted(first) == list(range(23)) and sorted(second) == list(range(23))
    assert first != list(range(23)) and first != second  # shuffled, and anew each epoch
    again = TensorBatches(numbered_samples(23), batch_size=5, shuffle=True, device=torch.device("cpu"), seed=7)
    assert epoch_order(again) == first and epoch_order(again) == second
    other = TensorBatches(numbered_samples(23), batch_size=5, shuffle=True, device=torch.device("cpu"), seed=8)
    assert epoch_order(other) != first


def test_tensor_batches_without_shuffle_keep_order():
    batches = TensorBatches(numbered_samples(7), batch_size=3, shuffle=False, device=torch.device("cpu"))
    assert [len(labels) for _, labels in batches] == [3, 3, 1] and epoch_order(batches) == list(range(7))


def window_shift(out: torch.Tensor, x: torch.Tensor, pad: int):
    """(dy, dx) such that `out` is the window of zero-padded `x` at that offset, else None."""
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[:, dy:dy + h, dx:dx + w], out):
                return dy, dx
    return None


def test_batch_augment_crop_is_a_shifted_copy():
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.01  # no zeros, unlike padding
    aug = BatchAugment("light", 16, torch.Generator().manual_seed(1))
    assert aug.pad == 2
    out = aug.crop(x)
    assert out.shape == x.shape
    shifts = [window_shift(o, s, aug.pad) for o, s in zip(out, x)]
    assert all(s is not None for s in shifts)
    assert len(set(shifts)) > 1 and any(s != (aug.pad, aug.pad) for s in shifts)


def test_batch_augment_light_is_a_shifted_copy_maybe_flipped():
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.01
    out = BatchAugment("light", 8, torch.Generator().manual_seed(2))(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    flipped = 0
    for o, s in zip(out, x):
        if window_shift(o, s, 1) is None:
            assert window_shift(o.flip(-1), s, 1) is not None
            flipped += 1
    assert 0 < flipped < 16


@pytest.mark.parametrize("level", ["none", "light", "standard"])
def test_batch_augment_keeps_shape_and_is_seeded(level):
    x = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    a = BatchAugment(level, 12, torch.Generator().manual_seed(5))(x)
    b = BatchAugment(level, 12, torch.Generator().manual_seed(5))(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    if level == "none":
        assert a is x


def test_csv_mixing_rows_with_and_without_a_split_is_refused(tmp_path):
    for name in ("a.png", "b.png"):
        save_image(tmp_path / name)
    write_csv(tmp_path / "m.csv", [["a.png", "cat", "train"], ["b.png", "dog", ""]])
    with pytest.raises(UserError, match="some rows have a split and some do not"):
        open_source(str(tmp_path / "m.csv"))


@st.composite
def manifest_like(draw):
    """CSV text whose cells mix real file names, traversal, NUL bytes, quotes, huge names and split words."""
    cell = st.one_of(st.sampled_from(["imgs/a.png", "imgs/b.png", "../x.png", "/etc/passwd", "a\x00b", '"', "",
                                      "x" * 5000, "train", "val", "valid", "test", "bogus", "path", "label"]),
                     st.text(max_size=20))
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=4), max_size=6))
    return "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=96), manifest_like()))
def test_fuzz_csv_manifest(tmp_path, data):
    """Any bytes as a manifest end in labelled files inside the folder or a clean UserError, never a crash."""
    folder = tmp_path / "fuzz"
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.new("L", (4, 4)).save(folder / "imgs" / name)
    manifest = folder / "m.csv"
    manifest.write_bytes(data)
    try:
        splits = read_manifest(manifest)
    except UserError as e:
        assert "\n" not in str(e).strip()
        return
    for files in splits.values():
        assert all(p.is_relative_to(folder.resolve()) and p.is_file() for p in files.files)
        assert len(files.files) == len(files.names)
