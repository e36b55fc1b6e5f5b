"""Recipes (issue 23): the registry filling only unset fields, the fast recipe's parts (patch whitening, alternating
flip, translation, Muon groups), an exact kill-and-resume of a fast run, and test-time augmentation recorded with
the model and honoured by predict, eval, export and serve."""
import json
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

import dlkit
from dlkit.cli.main import main
from dlkit.config import make_config
from dlkit.data.augment import BatchAugment
from dlkit.data.loaders import TensorBatches
from dlkit.data.source import Samples
from dlkit.models.fast import PatchWhitening
from dlkit.recipes import RECIPES, Fitting

from test_faults import final_weights, metrics, step_logging_train, steps_run, wait_for

TINY = ["--model-arg", "widths=8,8,8", "--no-tensorboard", "-q"]


def make_folder(root, channels: int, size: int, classes=("a-ant", "b-bee", "蜜蜂"), per_class=12):
    """Classes told apart by brightness; grey (L) or RGB PNGs of one size."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = (rng.integers(0, 60, (size, size, 3)) + 90 * i).astype(np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("L") if channels == 1 else image).save(root / name / f"{j}.png")
    return root


# ---- the registry ------------------------------------------------------------------------------------------------

def test_a_recipe_fills_only_what_the_user_left_unset_and_its_fit_changes_only_those():
    cfg = make_config({"data": "digits", "recipe": "fast", "epochs": 1, "batch_size": 64})
    assert cfg.recipe == "fast" and cfg.model == "airbench" and cfg.optimizer == "muon" and cfg.tta == "flip-shift"
    assert cfg.epochs == 1 and cfg.batch_size == 64
    assert "epochs" not in cfg.recipe_defaults and "batch_size" not in cfg.recipe_defaults
    assert {"model", "optimizer", "lr", "augment", "tta", "label_smoothing", "model_args"} <= set(cfg.recipe_defaults)
    fitted, notes = RECIPES.get("fast").fitted(cfg, Fitting(60000, "cpu", 28, ("shirt", "bag")))
    assert fitted.epochs == 1 and fitted.batch_size == 64                  # the user's
    assert fitted.model_args == {"widths": [32, 48, 64]}                   # scaled to the CPU, and said so
    assert fitted.weight_decay == pytest.approx(2e-6 * 64)                 # per step, for the user's batch
    assert any("on the CPU" in n for n in notes)
    digits, notes = RECIPES.get("fast").fitted(cfg, Fitting(60000, "cpu", 28, tuple("0123456789")))
    assert (digits.augment, digits.tta) == ("shift", "shift") and any("mirroring" in n for n in notes)
    left = make_config({"data": "digits", "recipe": "fast"})
    glyphs, _ = RECIPES.get("fast").fitted(left, Fitting(60000, "cpu", 28, tuple("0123456789")))
    clothes, _ = RECIPES.get("fast").fitted(left, Fitting(60000, "cpu", 28, ("shirt", "bag")))
    assert (glyphs.epochs, clothes.epochs, glyphs.batch_size) == (1, 3, 500)  # ~120 steps for glyphs on the CPU
    on_gpu, _ = RECIPES.get("fast").fitted(left, Fitting(60000, "cuda", 28, tuple("0123456789")))
    assert (on_gpu.epochs, on_gpu.model_args) == (8, {"widths": [64, 256, 256]})
    own = make_config({"data": "digits", "recipe": "fast", "augment": "alternating", "tta": "flip"})
    kept, _ = RECIPES.get("fast").fitted(own, Fitting(60000, "cpu", 28, tuple("0123456789")))
    assert (kept.augment, kept.tta) == ("alternating", "flip")             # typed flags win over the fit


def test_an_unknown_recipe_is_one_line_naming_the_known_ones(capsys):
    assert main(["train", "--data", "digits", "--recipe", "fastest"]) == 2
    err = capsys.readouterr().err
    assert "fastest" in err and "fast" in err and "Traceback" not in err


def test_dlkit_recipes_lists_every_recipe_with_the_flags_it_sets(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for entry in RECIPES:
        assert f"  {entry.name} " in out
    assert "--model airbench --model-arg widths=64,256,256" in out and "--optimizer muon" in out and "--amp" in out


# ---- the fast recipe's parts -------------------------------------------------------------------------------------

def test_patch_whitening_turns_the_training_patches_covariance_into_the_identity():
    torch.manual_seed(0)
    noise = torch.randn(64, 3, 18, 18)
    images = (noise[..., 1:-1, 1:-1] + noise[..., 2:, 1:-1] + noise[..., 1:-1, 2:]) / 3  # neighbours correlated
    images = images + torch.tensor([0.5, -0.2, 0.1])[:, None, None] * images[:, :1]       # and the channels
    layer = PatchWhitening(3)
    layer.init_from(images)
    out = F.conv2d(images, layer.weight[:12])  # the first half; the second is its negative
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    second_moment = flat.T @ flat / len(flat)
    assert torch.allclose(second_moment, torch.eye(12), atol=0.02)
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    before = patches.T @ patches / len(patches)
    assert (before - torch.diag(before.diag())).abs().max() > 0.2  # it had something to whiten
    assert torch.equal(layer.weight[12:], -layer.weight[:12]) and not layer.weight.requires_grad


def test_alternating_flip_shows_every_image_both_ways_across_two_epochs():
    n = 40
    images = torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8)
    batches = TensorBatches(Samples(torch.arange(n), images), 7, True, torch.device("cpu"), seed=3)
    batches.alternate_flip(seed=5)
    seen = {i: [] for i in range(n)}
    for epoch in (1, 2):
        batches.set_epoch(epoch)
        for x, index in batches:
            for image, i in zip(x, index.tolist()):
                if torch.equal(image, images[i]):
                    seen[i].append("plain")
                else:
                    assert torch.equal(image, images[i].flip(-1))
                    seen[i].append("mirrored")
    assert all(sorted(ways) == ["mirrored", "plain"] for ways in seen.values())
    mirrored_first = sum(ways[0] == "mirrored" for ways in seen.values())
    assert 5 < mirrored_first < n - 5  # a seeded half starts mirrored, not all or none


def test_translation_crops_stay_inside_the_reflect_padded_image():
    torch.manual_seed(0)
    x = torch.rand(200, 2, 9, 9)
    out = BatchAugment("shift", 9, torch.Generator().manual_seed(1))(x)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    offsets = set()
    for image, source in zip(out, padded):
        found = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(image, source[:, dy:dy + 9, dx:dx + 9])]
        assert found, "a translated image is not a crop of its own reflect-padded image"
        offsets.add(found[0])
    assert len(offsets) == 25  # every shift in [-2, 2]^2 occurs over 200 images


def test_muon_puts_matrices_under_muon_and_the_rest_under_nesterov_sgd_at_the_models_rates():
    from dlkit.training.optim import make_optimizer

    cfg = make_config({"data": "digits", "recipe": "fast", "batch_size": 100})
    model = dlkit.create_model("airbench", in_channels=1, num_classes=10, image_size=16, widths=(8, 8, 8))
    opt = make_optimizer(model, cfg)
    kinds = {type(o).__name__: o for o in opt.optimizers}
    assert set(kinds) == {"Muon", "SGD"}
    muon_params = {id(p) for g in kinds["Muon"].param_groups for p in g["params"]}
    head_weight = model.head.weight
    assert muon_params == {id(p) for p in model.parameters() if p.requires_grad and p.ndim == 2
                           and p is not head_weight}
    head = next(g for g in kinds["SGD"].param_groups if any(p is model.head.weight for p in g["params"]))
    assert head["nesterov"] and head["lr"] == pytest.approx(cfg.lr * model.lr_scales["head"] * 100)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen and not frozen & {id(p) for o in opt.optimizers for g in o.param_groups for p in g["params"]}


# ---- whole runs --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)], ids=["grey-28", "rgb-32"])
def test_a_few_step_fast_run_trains_records_its_recipe_and_evaluates_with_tta(tmp_path, channels, size, capsys):
    data = make_folder(tmp_path / "data", channels, size)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--recipe", "fast", "--epochs", "2", "--out", str(run), *TINY]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["recipe"] == "fast" and config["model"] == "airbench" and config["image_size"] in (None, size)
    assert "epochs" not in config["recipe_defaults"] and "model" in config["recipe_defaults"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tta"]["mode"] == "flip-shift" and 0 <= summary["tta"]["val_acc"] <= 1
    assert f"epoch {summary['best_epoch']}" in summary["tta"]["of"]  # the best checkpoint's, as eval uses
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    with_tta = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--json", "--tta", "none"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert (with_tta["tta"], without["tta"]) == ("flip-shift", "none")
    assert with_tta["accuracy"] == pytest.approx(summary["tta"]["val_acc"], abs=1e-6)
    assert without["loss"] != with_tta["loss"]
    report = (run / "report.html").read_text()
    assert "With test-time augmentation (flip-shift" in report and f"{with_tta['accuracy']:.4g}" in report


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    data = make_folder(root / "data", 3, 16)
    run = dlkit.train(data=str(data), recipe="fast", epochs=1, model_args={"widths": [8, 8, 8]}, out=str(root / "run"),
                      quiet=True, tensorboard=False, report=False)
    return run.dir, sorted(data.rglob("*.png"))[:4]


def views_by_hand(x: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    """airbench's TTA: the image and its mirror, each also moved 1 px up-left and down-right (reflect border)."""
    out = []
    for image in (x, x.flip(-1)):
        padded = F.pad(image, (1, 1, 1, 1), mode="reflect")
        out += [(image, 0.25), (padded[..., :-2, :-2], 0.125), (padded[..., 2:, 2:], 0.125)]
    return out


def test_predict_with_tta_is_the_weighted_mean_of_the_views_probabilities(tta_run, capsys):
    run, images = tta_run
    predictor = dlkit.load(run, device="cpu")
    assert predictor.tta == "flip-shift" and "tta flip-shift" in repr(predictor)
    from dlkit.data.transforms import normalize

    x = normalize(torch.stack([predictor.to_uint8(p) for p in images]), predictor.spec)
    with torch.no_grad():
        expected = sum(w * predictor.model(v).float().softmax(1) for v, w in views_by_hand(x))
        plain = predictor.model(x).float().softmax(1)
    assert not torch.allclose(expected, plain, atol=1e-4)  # the views do differ here
    for mode, want in (("flip-shift", expected), ("none", plain)):
        assert main(["predict", str(run), *map(str, images), "--json", "--topk", "3", "--tta", mode]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        names = predictor.classes
        got = torch.tensor([[next(p["probability"] for p in row["predictions"] if p["class"] == c) for c in names]
                            for row in rows])
        assert torch.allclose(got, want, atol=1e-5), mode


def test_export_puts_the_tta_in_the_graph_or_says_it_has_none(tta_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from dlkit.export import OnnxModel

    run, images = tta_run
    assert main(["export", str(run), "--out", str(tmp_path / "tta.onnx")]) == 0
    assert "test-time aug:    flip-shift, inside the graph" in capsys.readouterr().out
    assert main(["export", str(run), "--out", str(tmp_path / "plain.onnx"), "--tta", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == "none"
    for name, mode in (("tta.onnx", "flip-shift"), ("plain.onnx", "none")):
        onnx_model = OnnxModel(tmp_path / name)
        assert onnx_model.meta["tta"] == mode
        predictor = dlkit.load(run, device="cpu", tta=mode)
        batch = torch.stack([predictor.to_uint8(p) for p in images])
        assert torch.allclose(onnx_model.probabilities(batch), predictor.probabilities(batch), atol=1e-5), mode


def test_serve_uses_the_runs_tta_unless_told_none(tta_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dlkit.serve import ServeSettings, create_app, load_backend

    run, images = tta_run
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in images[:2]]
    answers = {}
    for mode in (None, "none"):
        with TestClient(create_app(load_backend(run, tta=mode), ServeSettings(tta=mode))) as client:
            response = client.post("/predict?topk=1", files=files)
        assert response.status_code == 200, response.text
        answers[mode] = [r["predictions"][0]["probability"] for r in response.json()["results"]]
    for mode, key in (("flip-shift", None), ("none", "none")):
        want = [p[0][1] for p in dlkit.load(run, device="cpu", tta=mode).predict(images[:2], topk=1)]
        assert answers[key] == pytest.approx(want, abs=1e-5)
    with pytest.raises(dlkit.UserError, match="--tta"):
        ServeSettings(tta="mirror")


def test_a_killed_fast_run_resumes_to_the_uninterrupted_runs_weights_muon_state_included(tmp_path):
    args = ["train", "--data", "digits", "--recipe", "fast", "--epochs", "2", "--model-arg", "widths=8,8,8",
            "--deterministic", "--save-every-steps", "5", "--seed", "7", "--no-tensorboard", "--no-report", "-q"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    uninterrupted = step_logging_train(tmp_path / "reference.log", 0, *args, "--out", reference)
    child = step_logging_train(tmp_path / "killed.log", 17, *args, "--out", killed)  # epoch 2 of 12-step epochs
    wait_for(tmp_path / "killed.log.hung", child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert uninterrupted.wait(300) == 0, uninterrupted.communicate()[1][-2000:]
    resumed = step_logging_train(tmp_path / "resumed.log", 0, "train", "--resume", killed)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert steps_run(tmp_path / "resumed.log") == list(range(16, 25))  # from the save at step 15, not a restart
    assert yaml.safe_load((killed / "config.yaml").read_text())["recipe"] == "fast"
    ref, got = final_weights(reference), final_weights(killed)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert metrics(killed) == metrics(reference)
