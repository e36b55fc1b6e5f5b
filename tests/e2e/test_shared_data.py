"""End-to-end CLI runs on the real datasets in ../shared/data, a few steps each, in real subprocesses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.e2e


def dataset(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (the shared datasets live beside the repo in ../shared/data)")
    return path


def dlkit(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "dlkit.cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_fashion_mnist_checkpoint_reproduces_its_accuracy_in_a_new_process(tmp_path):
    data = dataset("fashion-mnist")
    run = tmp_path / "fm"
    summary = json.loads(dlkit("train", "--data", data, "--model", "lenet-modern", "--epochs", 1,
                               "--out", run, "--json").stdout)
    assert summary["best_val_acc"] > 0.80  # one epoch of lenet-modern
    metrics = json.loads(dlkit("eval", run, "--json").stdout)
    assert metrics["samples"] == 10000
    assert metrics["accuracy"] == pytest.approx(summary["best_val_acc"], abs=1e-6)
    assert metrics["top5_accuracy"] >= metrics["accuracy"]
    names = [row["class"] for row in metrics["per_class"]]
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    predicted = dlkit("predict", run, run / "samples", "--json").stdout.splitlines()
    assert len(predicted) == 8


def test_mnist_as_a_builtin_read_from_a_data_dir(tmp_path):
    data = dataset("mnist")
    proc = dlkit("train", "--data", "mnist", "--data-dir", data, "--model", "softmax", "--epochs", 1,
                 "--batch-size", 512, "--out", tmp_path / "m", "--json", "--no-tensorboard")
    summary = json.loads(proc.stdout)
    assert summary["best_val_acc"] > 0.85 and summary["data"] == "mnist"


@pytest.mark.parametrize("model,extra", [("quick", ["--image-size", 32]), ("tv:resnet18", ["--image-size", 64])])
def test_hymenoptera_train_val_folders_train_and_evaluate(tmp_path, model, extra):
    data = dataset("hymenoptera")
    run = tmp_path / "h"
    proc = dlkit("train", "--data", data, "--model", model, *extra, "--epochs", 1, "--batch-size", 32,
                 "--out", run, "--no-tensorboard")
    assert "layout: train/val split folders" in proc.stdout
    # ImageFolder counts 244: it skips the .gif placeholder, which dlkit reads as the image it is (one rule for
    # training and predict, issue 27), so nothing is ignored
    assert "245 train / 153 val" in proc.stdout and "non-image" not in proc.stdout
    metrics = json.loads(dlkit("eval", run, "--json").stdout)
    assert metrics["samples"] == 153 and [r["class"] for r in metrics["per_class"]] == ["ants", "bees"]
    out = dlkit("predict", run, data / "val" / "bees", "--topk", 1).stdout.splitlines()
    assert len(out) == 83 and all(line.split(": ")[1].split()[0] in ("ants", "bees") for line in out)
