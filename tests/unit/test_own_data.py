"""The learner's own data from Python (a Dataset written the course's way, a torchvision dataset object), --init,
and models from an installed package's entry point."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from fakedata import make_class_folders
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

import dlkit
from dlkit.cli.main import main
from dlkit.errors import UserError

FAST = dict(epochs=1, tensorboard=False, report=False, workers=0, disk_cache=False)


class MyData(Dataset):
    """As the course writes it: the folder name is the label, items are PIL images straight from Image.open."""

    def __init__(self, root_dir, label_dir):
        self.root_dir, self.label_dir = root_dir, label_dir
        self.path = os.path.join(root_dir, label_dir)
        self.img_path = sorted(os.listdir(self.path))

    def __getitem__(self, idx):
        return Image.open(os.path.join(self.path, self.img_path[idx])), self.label_dir

    def __len__(self):
        return len(self.img_path)


class Broken(Dataset):
    """Item 5 has the wrong shape: the error must name the class, the index and what was expected."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.rand(3, 16, 16) if i != 5 else torch.rand(1, 8, 8), i % 2


@pytest.fixture
def folders(tmp_path):
    return make_class_folders(tmp_path / "imgs", ("蚂蚁", "bees"), per_class=10, size=20)


def test_course_dataset_with_name_labels_trains_resumes_and_predicts_files_in_a_fresh_process(folders, tmp_path):
    data = MyData(folders, "蚂蚁") + MyData(folders, "bees")  # a ConcatDataset: no .classes, no .targets
    run = dlkit.train(data=data, model="quick", image_size=16, out=str(tmp_path / "run"), quiet=True, **FAST)
    predictor = dlkit.load(run.dir)
    assert predictor.classes == ("bees", "蚂蚁")
    assert predictor.spec.image_size == 16 and predictor.spec.channels == 3
    # statistics of the training split, as for a folder: 16 of these 20 images, whose own figures differ by ~0.002
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in sorted(folders.rglob("*.png"))])
    assert predictor.spec.mean == pytest.approx(pixels.mean(axis=(0, 1, 2)), abs=0.006)
    assert predictor.spec.std == pytest.approx(pixels.std(axis=(0, 1, 2)), abs=0.015)  # 20 -> 16 px smooths a bit

    steps = []
    resumed = dlkit.train(data=data, resume=run.dir, epochs=2, quiet=True, callbacks=[Steps(steps)])
    assert resumed.dir == run.dir and [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[0] == run.history[0]  # epoch 1's own record, timings included: kept, not trained again
    assert len(steps) == len(run.history) * steps_per_epoch(run.dir)  # only epoch 2 trained
    image = next((folders / "bees").iterdir())
    code = ("import dlkit, sys; print(dlkit.load(sys.argv[1]).predict(sys.argv[2], topk=1)[0][0])")
    out = subprocess.run([sys.executable, "-c", code, str(run.dir), str(image)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("bees", "蚂蚁")


class Steps:
    def __init__(self, steps):
        self.steps = steps

    def on_batch_end(self, trainer, batch_size, loss):
        self.steps.append(batch_size)


def steps_per_epoch(run_dir) -> int:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["step"]


def test_torchvision_dataset_with_its_own_transform_is_respected_and_predict_rebuilds_it(folders, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))])
    train = torchvision.datasets.ImageFolder(str(folders), transform=transform)
    val = torchvision.datasets.ImageFolder(str(folders), transform=transform)
    run = dlkit.train(data=train, val_data=val, model="lenet-modern", out=str(tmp_path / "run"), quiet=True, **FAST)
    predictor = dlkit.load(run.dir)
    assert predictor.classes == tuple(train.classes)
    assert predictor.spec.mean == (0.4, 0.5, 0.6) and predictor.spec.std == (0.2, 0.3, 0.25)
    assert predictor.spec.image_size == 20
    # predict on the file gives exactly what the model gives on the user's own transform of it
    path, _ = train.samples[3]
    with torch.no_grad():
        expected = predictor.model(transform(Image.open(path).convert("RGB")).unsqueeze(0)).softmax(1)
    assert torch.allclose(predictor.predict_proba([path]), expected, atol=1e-5)
    assert len(run.history) == 1 and run.summary["best_metrics"]["val_acc"] >= 0


def test_a_bad_item_names_the_dataset_the_index_and_what_was_expected(tmp_path):
    with pytest.raises(UserError, match=r"Broken\[5\] is a torch.float32 tensor of shape 1x8x8; expected a float "
                                        r"tensor of shape 3x16x16"):
        dlkit.train(data=Broken(), val_data=Broken(), model="softmax", out=str(tmp_path / "r"), quiet=True, **FAST)


@pytest.mark.parametrize("data, message", [
    ([(1, 2)], "PIL image or a CxHxW tensor"),
    ([torch.rand(3, 8, 8)], r"list\[0\] is a torch.float32 tensor of shape 3x8x8; expected a pair"),
    ([(torch.rand(3, 8, 6), 0)], "add Resize"),
])
def test_unusable_datasets_are_refused_with_the_fix(tmp_path, data, message):
    with pytest.raises(UserError, match=message):
        dlkit.train(data=data * 4, model="softmax", out=str(tmp_path / "r"), quiet=True, **FAST)


def test_iterable_datasets_and_val_data_without_a_dataset_are_refused(tmp_path):
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.rand(3, 8, 8), 0

    with pytest.raises(UserError, match="map-style Dataset"):
        dlkit.train(data=Stream(), model="softmax", quiet=True, **FAST)
    with pytest.raises(UserError, match="val_data= goes with your own Dataset"):
        dlkit.train(data="digits", val_data=[(torch.rand(1, 8, 8), 0)], quiet=True, **FAST)


def test_a_dataset_run_cannot_be_resumed_from_the_cli_and_says_why(folders, tmp_path, capsys):
    data = MyData(folders, "bees") + MyData(folders, "蚂蚁")
    run = dlkit.train(data=data, model="softmax", image_size=8, out=str(tmp_path / "run"), quiet=True, **FAST)
    assert main(["train", "--resume", str(run.dir), "--epochs", "2"]) == 2
    assert "your own Dataset object" in capsys.readouterr().err


def _xavier(w):  # uniform on +-bound: nothing past it, and the spread of a uniform (std = bound / sqrt(3))
    bound = (6 / sum(_fans(w))) ** 0.5
    return float(w.abs().max()) <= bound + 1e-6 and _near(w, bound / 3 ** 0.5)


def _near(w, std):  # within a quarter of it: 3+ standard errors on the 72 weights of the smallest layer here
    return abs(float(w.detach().std()) - std) < 0.25 * std and abs(float(w.detach().mean())) < 0.25 * std


@pytest.mark.parametrize("scheme, check", [
    ("normal", lambda w: _near(w, 0.01)),
    ("xavier", _xavier),
    ("kaiming", lambda w: _near(w, (2 / _fans(w)[0]) ** 0.5)),  # fan-in, ReLU gain
])
def test_init_reinitialises_every_linear_and_conv_layer_lazy_ones_included(tmp_path, scheme, check):
    from dlkit.config import make_config
    from dlkit.models.init import initialize
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(200), nn.ReLU(), nn.Linear(200, 10))
    assert initialize(net, scheme, (1, 12, 12)) == 3
    for layer in (net[0], net[3], net[5]):
        assert check(layer.weight) and float(layer.bias.detach().abs().sum()) == 0
    assert make_config({"init": scheme}).init == scheme  # recorded in the config, hence in config.yaml


def test_init_from_the_cli_is_recorded_and_applied_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "mlp", "--init", "normal", "--epochs", "1", "--out", str(out),
                 "--no-tensorboard", "--no-report"]) == 0
    assert "init: normal on 3 Linear/Conv layer(s)" in capsys.readouterr().out
    assert "init: normal" in (out / "config.yaml").read_text()


def _fans(w):
    receptive = w[0][0].numel() if w.dim() > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


def test_models_from_an_installed_packages_entry_point_are_listed_and_train(tmp_path):
    site = tmp_path / "site"
    (site / "tudui_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "tudui_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: tudui-plugin\n"
                                                                  "Version: 0.1\n")
    (site / "tudui_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[dlkit.models]\nplugin-net = tudui_plugin:make_net\n")
    (site / "tudui_plugin.py").write_text(textwrap.dedent('''
        from torch import nn

        def make_net(num_classes=10, in_channels=1, image_size=8):
            """A learner's net shipped in a package."""
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
    '''))
    env = {**os.environ, "PYTHONPATH": str(site)}
    dlkit_cli = [sys.executable, "-m", "dlkit.cli.main"]
    listing = subprocess.run(dlkit_cli + ["models"], capture_output=True, text=True, env=env, timeout=120)
    assert listing.returncode == 0 and "plugin-net" in listing.stdout, listing.stderr
    out = tmp_path / "run"
    trained = subprocess.run(dlkit_cli + ["train", "--model", "plugin-net", "--epochs", "1", "--out", str(out),
                                          "--no-tensorboard", "--no-report", "-q"], capture_output=True, text=True,
                             env=env, timeout=240)
    assert trained.returncode == 0, trained.stderr
    predicted = subprocess.run(dlkit_cli + ["predict", str(out), str(next((out / "samples").iterdir()))],
                               capture_output=True, text=True, env=env, timeout=120)
    assert predicted.returncode == 0, predicted.stderr


class Uint8Pairs(Dataset):
    """uint8 CxHxW tensors (as torchvision.io.read_image gives them) with name labels, 24 px: resized to 16."""

    def __init__(self, n=24):
        gen = torch.Generator().manual_seed(0)
        self.labels = ["dark", "bright"] * (n // 2)
        self.images = [torch.randint(0, 80, (3, 24, 24), dtype=torch.uint8, generator=gen) + (160 if i % 2 else 0)
                       for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def test_uint8_tensors_are_resized_and_normalised_with_the_training_splits_statistics(tmp_path):
    data = Uint8Pairs()
    run = dlkit.train(data=data, model="quick", image_size=16, out=str(tmp_path / "run"), quiet=True,
                      **{**FAST, "epochs": 3})
    predictor = dlkit.load(run.dir)
    assert predictor.spec.image_size == 16 and predictor.spec.channels == 3
    pixels = torch.stack(data.images).double() / 255  # 0..255 read as such, not as 0..1 floats already
    assert predictor.spec.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=0.02)
    assert run.summary["best_metrics"]["val_acc"] == 1.0  # dark from bright, learned
    assert [top[0][0] for top in predictor.predict([data.images[0], data.images[1]])] == ["dark", "bright"]
