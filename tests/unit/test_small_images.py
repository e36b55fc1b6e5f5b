"""A folder of small images of one size trains at that size (CIFAR's 32 px JPEGs are not blown up to a model's 224),
with a note; --image-size overrides; mixed sizes, large images and a size the model cannot take keep the model's
default."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import dlkit
from dlkit.data.loaders import uniform_small_side
from fakedata import make_class_folders

FAST = dict(epochs=1, workers=0, tensorboard=False, report=False, disk_cache=False, quiet=True)


def _spec(tmp_path, data, **options):
    run = dlkit.train(data=str(data), out=str(tmp_path / f"run-{len(list(tmp_path.iterdir()))}"), **FAST, **options)
    return dlkit.load(run.dir).spec


def test_a_uniform_small_folder_trains_at_its_own_size(tmp_path):
    data = make_class_folders(tmp_path / "small", ("ants", "bees"), per_class=4, size=20)
    assert uniform_small_side(sorted(data.rglob("*.png"))) == 20
    assert _spec(tmp_path, data, model="resnet18").image_size == 20  # its default is 224
    assert _spec(tmp_path, data, model="resnet18", image_size=24).image_size == 24  # --image-size overrides


def test_mixed_sizes_large_images_and_too_small_for_the_model_keep_the_default(tmp_path):
    mixed = make_class_folders(tmp_path / "mixed", ("ants", "bees"), per_class=4, size=20)
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(mixed / "bees" / "other.png")
    assert uniform_small_side(sorted(mixed.rglob("*.png"))) is None
    assert _spec(tmp_path, mixed, model="quick").image_size == 32
    large = make_class_folders(tmp_path / "large", ("ants", "bees"), per_class=3, size=80)
    assert uniform_small_side(sorted(large.rglob("*.png"))) is None
    assert _spec(tmp_path, large, model="quick").image_size == 32
    tiny = make_class_folders(tmp_path / "tiny", ("ants", "bees"), per_class=4, size=6)
    assert _spec(tmp_path, tiny, model="quick").image_size == 32  # quick takes 8 px at the least


def test_the_data_line_notes_the_choice(tmp_path, capsys):
    from dlkit.cli.main import main

    data = make_class_folders(tmp_path / "small", ("ants", "bees"), per_class=4, size=20)
    assert main(["train", "--data", str(data), "--model", "resnet18", "--epochs", "1", "--workers", "0",
                 "--no-tensorboard", "--no-report", "--no-disk-cache", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "input 3x20x20" in out and "training at 20 px (the model's default is 224" in out


@pytest.mark.parametrize("size, side", [((32, 24), 24), ((64, 64), 64), ((65, 65), None)])
def test_the_side_is_the_shorter_one_up_to_64_px(tmp_path, size, side):
    for i in range(3):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tmp_path / f"{i}.png")
    assert uniform_small_side(sorted(tmp_path.glob("*.png"))) == side


def test_in_memory_images_smaller_than_the_model_takes_are_resized_to_its_default_with_a_note(tmp_path, capsys):
    from dlkit.cli.main import main

    # digits are 8 px and lenet takes 28 at the least: as for a folder of too-small files, the model's default
    assert main(["train", "--data", "digits", "--model", "lenet", "--epochs", "1", "--no-tensorboard",
                 "--no-report", "--out", str(tmp_path / "lenet")]) == 0
    out = capsys.readouterr().out
    assert "input 1x28x28" in out and "the images are 8 px, smaller than the model takes" in out
    assert dlkit.load(tmp_path / "lenet").spec.image_size == 28
    assert _spec(tmp_path, "digits", model="mlp").image_size == 8  # a model that takes 8 px keeps them
