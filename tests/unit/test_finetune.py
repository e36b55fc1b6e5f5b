"""The finetune recipe (issue 23): --weights imagenet through torchvision's weights API and torch.hub's cache, fetched
from a real HTTP server on 127.0.0.1 that serves a weights file this test writes; the head trained alone first, then
everything at per-group rates; photo folders get the recipe by default only where the weights are at hand."""
import hashlib
import http.server
import socket
import threading
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.cli.main import main
from dlkit.config import make_config
from dlkit.models import pretrained
from dlkit.storage import load_tensors

SMALL = ["--image-size", "32", "--no-tensorboard", "--no-report", "--workers", "0"]


def make_photos(root, side=80, classes=("ants", "bees", "蜜蜂"), per_class=6):
    rng = np.random.default_rng(0)
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            Image.fromarray((rng.integers(0, 80, (side, side + 10, 3)) + 80 * i).astype(np.uint8)).save(
                root / name / f"{j}.jpg")
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A resnet18 state dict (seeded, not ImageNet's), named as torch.hub names files: <name>-<sha256 prefix>.pth."""
    import torchvision

    folder = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    plain = folder / "plain.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    named = folder / f"resnet18-{digest[:8]}.pth"
    plain.rename(named)
    (folder / "resnet18-00000000.pth").write_bytes(named.read_bytes())  # a name whose hash it does not have
    return named


@pytest.fixture(scope="module")
def server(weights_file):
    """A static file server on 127.0.0.1 (an ephemeral port), counting the requests it answers."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(weights_file.parent)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    thread.join(10)


@pytest.fixture
def served_as(monkeypatch, tmp_path, server):
    """torchvision's weights API answering with the test server's URL for a file name; torch.hub's cache in tmp."""
    base, requests = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def serve(name: str):
        monkeypatch.setattr(pretrained, "torchvision_default", lambda model: ("ResNet18_Weights.TEST", f"{base}/{name}"))
        return tmp_path / "torch-home" / "hub" / "checkpoints" / name
    return serve, requests


def backbone(state: dict) -> dict:
    return {k.removeprefix("net."): v for k, v in state.items()
            if not k.startswith("net.fc.") and "running_" not in k and "num_batches" not in k}


def test_imagenet_weights_download_once_into_the_cache_and_the_head_trains_alone_first(
        tmp_path, weights_file, served_as, capsys):
    serve, requests = served_as
    cached = serve(weights_file.name)
    photos = make_photos(tmp_path / "photos")
    before = len(requests)
    assert main(["train", "--data", str(photos), "--recipe", "finetune", "--epochs", "1", *SMALL,
                 "--out", str(tmp_path / "head")]) == 0
    out = capsys.readouterr().out
    assert "weights: ResNet18_Weights.TEST" in out and "backbone frozen, the head trains alone" in out
    assert cached.read_bytes() == weights_file.read_bytes() and len(requests) == before + 1
    served = torch.load(weights_file, weights_only=True)
    trained = backbone(load_tensors(tmp_path / "head" / "checkpoints" / "last.safetensors")[0])
    assert trained and all(torch.equal(trained[k], served[k]) for k in trained)  # frozen: the served weights still
    # a second run reads the cache (no request), and after its frozen epoch the backbone trains, at a tenth of the rate
    assert main(["train", "--data", str(photos), "--recipe", "finetune", "--epochs", "2", *SMALL,
                 "--out", str(tmp_path / "all")]) == 0
    out = capsys.readouterr().out
    assert len(requests) == before + 1 and "epoch 2: backbone unfrozen: everything trains, the backbone at lr x0.1" in out
    moved = backbone(load_tensors(tmp_path / "all" / "checkpoints" / "last.safetensors")[0])
    assert any(not torch.equal(moved[k], served[k]) for k in moved)


def test_a_download_whose_hash_does_not_match_its_name_is_refused_and_nothing_is_kept(tmp_path, served_as, capsys):
    serve, _ = served_as
    cached = serve("resnet18-00000000.pth")
    photos = make_photos(tmp_path / "photos")
    assert main(["train", "--data", str(photos), "--recipe", "finetune", *SMALL, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "do not match the SHA-256 prefix" in err and "Traceback" not in err
    assert not cached.exists() and not list(cached.parent.glob("*")) and not (tmp_path / "run").exists()


def test_offline_one_line_says_where_to_put_the_file(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("DLKIT_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}/models")
    photos = make_photos(tmp_path / "photos", per_class=2)
    assert main(["train", "--data", str(photos), "--recipe", "finetune", *SMALL, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    where = pretrained.pretrained_for("tv:resnet18").file
    assert len(err.splitlines()) == 1 and f"without internet, put that file at {where}" in err
    assert where.name.startswith("resnet18-") and not where.exists()


def test_photo_folders_get_finetune_by_default_only_where_the_weights_are_at_hand(tmp_path, monkeypatch, capsys,
                                                                               weights_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    photos = make_photos(tmp_path / "photos", per_class=3)
    small = make_photos(tmp_path / "small", side=20, per_class=3)
    assert make_config({"data": str(photos)}).recipe == "images"
    assert main(["train", "--data", str(photos), "--epochs", "1", "--no-tensorboard", "--no-report",
                 "--out", str(tmp_path / "plain")]) == 0
    assert "these look like photos (about 80 px)" in capsys.readouterr().out  # and what fine-tuning would take
    where = pretrained.pretrained_for("tv:resnet18").file
    where.parent.mkdir(parents=True)
    where.write_bytes(weights_file.read_bytes())
    cfg = make_config({"data": str(photos)})
    assert (cfg.recipe, cfg.model, cfg.weights, cfg.freeze_epochs) == ("finetune", "tv:resnet18", "imagenet", 1)
    assert "recipe" in cfg.recipe_defaults
    assert make_config({"data": str(photos), "model": "quick"}).recipe == "images"   # a model named: the user's
    assert make_config({"data": str(small)}).recipe == "images"                      # small images: not photos
    assert make_config({"data": "digits"}).recipe == "images"


def test_weights_by_name_are_for_torchvision_models_and_freeze_epochs_needs_a_head(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--model", "lenet", "--weights", "imagenet", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--weights imagenet is for torchvision models" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--freeze-epochs", "-1"]) == 2
    assert "--freeze-epochs must be >= 0" in capsys.readouterr().err


def test_backbone_lr_scale_makes_two_groups_whose_rates_keep_their_ratio():
    import dlkit
    from dlkit.training.optim import make_optimizer

    model = dlkit.create_model("tv:resnet18", in_channels=3, num_classes=2, image_size=32)
    cfg = make_config({"data": "digits", "model": "tv:resnet18", "lr": 0.01, "backbone_lr_scale": 0.1})
    groups = make_optimizer(model, cfg).param_groups
    head = {id(p) for p in model.head.parameters()}
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.001])
    assert {id(p) for p in groups[0]["params"]} == head
    assert len(groups[1]["params"]) == sum(1 for p in model.parameters() if id(p) not in head)
