"""The task seam (losses, metrics over whole splits, best-checkpoint choice), K-fold splits, cross-validation of
tables and images, table checkpoints (JSON spec, no pickle), resume, predict from Python and permutation importance."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dlkit
from dlkit.data.source import holdout_indices
from dlkit.storage import load_tensors
from dlkit.tasks import Classification, Regression, TargetScale, regression_metrics

FAST = {"tensorboard": False, "report": False, "quiet": True}


def regression_csv(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    frame = pd.DataFrame({"row": range(n), "x1": x1, "x2": x2, "noise": rng.normal(size=n),
                          "kind": rng.choice(["a", "b", "c"], n)})
    frame["y"] = 3 * x1 - 2 * x2 + (frame["kind"] == "b") * 1.5 + rng.normal(0, 0.1, n)
    frame.to_csv(path, index=False)
    return path


# ---- metrics and losses ---------------------------------------------------------------------------------------------

def test_regression_metrics_are_over_the_whole_split_not_an_average_of_batches():
    predicted, actual = torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(predicted, actual)
    assert m["rmse"] == pytest.approx(math.sqrt(36 / 4))        # 3.0; batches of 2 would average 0 and 4.24 -> 2.12
    assert m["mae"] == pytest.approx(6 / 4)
    assert m["r2"] == pytest.approx(1 - 36 / 5)
    log = regression_metrics(torch.tensor([math.e, 1.0]), torch.tensor([1.0, 1.0]), log_target=True)
    assert log["rmsle"] == pytest.approx(math.sqrt(0.5))


def test_regression_losses_and_values_by_hand():
    task = Regression(TargetScale("log", mean=1.0, std=2.0))
    outputs, targets = torch.tensor([[0.5], [-1.0]]), torch.tensor([0.0, 0.0])
    assert float(task.loss("mse")(outputs, targets)) == pytest.approx((0.25 + 1.0) / 2)
    assert float(task.loss("l1")(outputs, targets)) == pytest.approx((0.5 + 1.0) / 2)
    assert float(task.loss("huber")(outputs, targets)) == pytest.approx((0.5 * 0.25 + 0.5 * 1.0) / 2)
    assert task.values(outputs).tolist() == pytest.approx([math.exp(2.0), math.exp(-1.0)])  # exp(z * 2 + 1)
    members = torch.tensor([[[0.5], [1.5]], [[-1.0], [-1.0]]])  # (batch 2, 2 members, 1)
    assert float(task.loss("mse")(members, targets)) == pytest.approx((0.25 + 2.25 + 1 + 1) / 4)  # each member's own
    assert task.values(members).tolist() == pytest.approx([math.exp(3.0), math.exp(-1.0)])  # the members' mean


def test_target_scale_round_trips():
    scale = TargetScale("log", 11.0, 0.5)
    y = torch.tensor([5_000.0, 120_000.0, 775_000.0])
    assert scale.decode(scale.encode(y)).tolist() == pytest.approx(y.tolist(), rel=1e-6)


def test_classification_task_by_hand():
    task = Classification(["a", "b"])
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 1, 1])
    metrics = task.val_metrics(logits, labels, task.loss("cross-entropy"))
    assert metrics["val_acc"] == pytest.approx(2 / 3)
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.e / (math.e + 1))
                 + math.log(1 / (math.exp(3) + 1))) / 3
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert task.predictions(logits)["prediction"] == ["a", "b", "a"]


# ---- folds ----------------------------------------------------------------------------------------------------------

def test_k_folds_cover_every_row_once_and_stratify_classes():
    labels = torch.tensor([0] * 30 + [1] * 12 + [2] * 6)
    seen = []
    for fold in range(3):
        train, val = holdout_indices(len(labels), labels, 0.2, seed=4, folds=3, fold=fold)
        assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == len(labels)
        assert torch.bincount(labels[val]).tolist() == [10, 4, 2]  # each class split evenly
        seen += val.tolist()
    assert sorted(seen) == list(range(len(labels)))
    again = holdout_indices(len(labels), labels, 0.2, seed=4, folds=3, fold=1)[1]
    other = holdout_indices(len(labels), labels, 0.2, seed=5, folds=3, fold=1)[1]
    assert again.tolist() == holdout_indices(len(labels), labels, 0.2, 4, 3, 1)[1].tolist()
    assert again.tolist() != other.tolist()
    with pytest.raises(dlkit.UserError, match="fewer than --folds"):
        holdout_indices(len(labels), labels, 0.2, 0, folds=7, fold=0)


# ---- cross-validation, refit, predict --------------------------------------------------------------------------------

def test_cross_validate_a_table_then_refit_and_predict_from_python(tmp_path):
    data = regression_csv(tmp_path / "t.csv")
    result = dlkit.cross_validate(data=str(data), target="y", folds=3, refit=True, out=str(tmp_path / "cv"),
                                  epochs=30, **FAST)
    assert len(result["folds"]) == 3 and sum(f["rows"] for f in result["folds"]) == 120
    assert result["mean"]["val_rmse"] == pytest.approx(np.mean([f["val_rmse"] for f in result["folds"]]))
    assert result["mean"]["val_r2"] > 0.8  # y is nearly linear in x1, x2
    fold_configs = [json.loads(json.dumps(dlkit.load(f["run_dir"]).meta["config"])) for f in result["folds"]]
    assert [c["fold"] for c in fold_configs] == [0, 1, 2] and all(c["folds"] == 3 for c in fold_configs)
    refit = dlkit.load(result["refit"]["run_dir"]).meta["config"]
    assert refit["refit"] and refit["epochs"] == result["refit"]["epochs"]
    best = [min(history(f["run_dir"]), key=lambda m: m["val_rmse"])["epoch"] for f in result["folds"]]
    refit_history = history(result["refit"]["run_dir"])
    assert len(refit_history) == result["refit"]["epochs"] == max(1, round(float(np.median(best)))), best
    refit_summary = json.loads((Path(result["refit"]["run_dir"]) / "summary.json").read_text())
    assert refit_summary["train_samples"] == 120  # every row, none held out
    cv_json = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv_json["mean"] == result["mean"]
    new = pd.DataFrame({"row": [1000, 1001], "x1": [1.0, -1.0], "x2": [0.0, 0.0], "noise": [0.0, 0.0],
                        "kind": ["a", "a"]})
    predicted = dlkit.load(tmp_path / "cv").predict(new)  # the refit model
    assert predicted["row"].tolist() == [1000, 1001]  # the identifier column, found in training
    assert predicted["y"].iloc[0] - predicted["y"].iloc[1] == pytest.approx(6.0, abs=1.5)  # 3 * (1 - -1)


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_a_cv_folder_without_refit_averages_its_fold_models(tmp_path):
    data = regression_csv(tmp_path / "t.csv")
    result = dlkit.cross_validate(data=str(data), target="y", folds=2, out=str(tmp_path / "cv"), epochs=5, **FAST)
    rows = pd.read_csv(data).head(5)
    ensemble = dlkit.load(tmp_path / "cv")
    assert len(ensemble.models) == 2
    each = [dlkit.load(f["run_dir"]).predict(rows)["y"].to_numpy() for f in result["folds"]]
    assert not np.allclose(each[0], each[1])  # two different models, each with its own fitted preprocessing
    assert ensemble.predict(rows)["y"].to_numpy() == pytest.approx(np.mean(each, 0), rel=1e-5)


def test_cross_validate_an_image_folder(tmp_path):
    from fakedata import make_class_folders

    folder = make_class_folders(tmp_path / "imgs", ("cat", "dog"), per_class=6, size=12)
    result = dlkit.cross_validate(data=str(folder), folds=2, out=str(tmp_path / "cv"), model="softmax", epochs=3,
                                  image_size=12, **FAST)
    assert [f["rows"] for f in result["folds"]] == [6, 6]
    # dark cats, bright dogs: learned (a constant answer scores 0.5), and each fold's figure is its held-out half's
    assert result["mean"]["val_acc"] == pytest.approx(np.mean([f["val_acc"] for f in result["folds"]]))
    assert result["mean"]["val_acc"] >= 0.9
    for f in result["folds"]:
        alone = dlkit.evaluate(f["run_dir"])  # `dlkit eval FOLD_RUN`: the fold's own 6 held-out images
        assert alone["samples"] == 6 and alone["accuracy"] == pytest.approx(f["val_acc"])


# ---- checkpoints, monitor, resume ------------------------------------------------------------------------------------

def test_table_checkpoint_holds_its_spec_as_json_and_the_monitor_picks_best(tmp_path):
    data = regression_csv(tmp_path / "t.csv")
    run = dlkit.train(data=str(data), target="y", epochs=6, out=str(tmp_path / "run"), monitor="val_mae", **FAST)
    _, meta = load_tensors(run.checkpoint)
    assert meta["modality"] == "table" and meta["task"]["name"] == "regression"
    assert meta["spec"]["target"] == "y" and {c["name"] for c in meta["spec"]["columns"]} == {"x1", "x2", "noise", "kind"}
    assert [s["name"] for s in meta["spec"]["skipped"]] == ["row"]
    best = min(run.history, key=lambda r: r["val_mae"])
    assert run.summary["best_epoch"] == best["epoch"] and run.summary["monitor"] == "val_mae"
    assert dlkit.evaluate(run.dir)["mae"] == pytest.approx(best["val_mae"], rel=1e-5)


def test_a_table_run_resumes_after_its_last_epoch_instead_of_starting_again(tmp_path, capsys):
    data = regression_csv(tmp_path / "t.csv")
    first = dlkit.train(data=str(data), target="y", epochs=3, out=str(tmp_path / "run"), seed=1, **FAST)
    longer = dlkit.train(resume=first.dir, epochs=5, tensorboard=False, report=False, log=None)
    assert "resuming" in capsys.readouterr().out
    assert [r["epoch"] for r in longer.history] == [1, 2, 3, 4, 5]
    assert longer.history[:3] == first.history  # the first three epochs were not run again
    assert longer.history[3]["step"] - longer.history[2]["step"] == longer.history[0]["step"]


# ---- importance ------------------------------------------------------------------------------------------------------

def test_permutation_importance_ranks_the_columns_the_target_depends_on(tmp_path):
    data = regression_csv(tmp_path / "t.csv", n=300)
    run = dlkit.train(data=str(data), target="y", out=str(tmp_path / "run"), tensorboard=False, quiet=True)
    metrics = json.loads((run.dir / "eval" / "val_metrics.json").read_text())
    ranked = [r["column"] for r in metrics["permutation_importance"]]
    assert ranked[:2] == ["x1", "x2"]  # |3| and |-2|: the rest matter far less
    noise = next(r for r in metrics["permutation_importance"] if r["column"] == "noise")
    assert noise["importance"] < 0.1 * metrics["permutation_importance"][0]["importance"]
    assert (run.dir / "plots" / "importance.png").is_file() and (run.dir / "plots" / "regression.png").is_file()


def test_per_class_metrics_match_scikit_learn_including_a_class_never_predicted():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from dlkit.evaluation.metrics import classification_metrics

    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(300, 4, generator=gen), torch.randint(0, 4, (300,), generator=gen)
    logits[:, 3] = -10  # class 3 is never predicted: its precision is undefined and reported as 0
    m = classification_metrics(logits, labels, ["a", "b", "c", "d"])
    p, r, f, s = precision_recall_fscore_support(labels, logits.argmax(1), labels=range(4), zero_division=0)
    for key, expected in (("precision", p), ("recall", r), ("f1", f), ("support", s)):
        assert [c[key] for c in m["per_class"]] == pytest.approx(list(expected), abs=1e-6)
    assert m["confusion_matrix"] == confusion_matrix(labels, logits.argmax(1), labels=range(4)).tolist()


def test_run_files_honour_the_umask_like_tensorboard_does(tmp_path):
    import os
    import stat

    data = regression_csv(tmp_path / "t.csv")
    old = os.umask(0o022)
    try:
        run = dlkit.train(data=str(data), target="y", epochs=1, out=str(tmp_path / "run"), quiet=True)
    finally:
        os.umask(old)
    files = [run.dir / "config.yaml", run.dir / "summary.json", run.dir / "report.html", run.checkpoint,
             run.dir / "checkpoints" / "last.state.safetensors", run.dir / "metrics.jsonl"]
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {"0o644"}
    assert not list(run.dir.rglob("*.tmp"))  # still written through a temp file and a rename


@pytest.mark.parametrize("split_name", ["train", "training"])
def test_a_folder_holding_only_train_is_split_not_one_class(tmp_path, split_name):
    from fakedata import make_class_folders

    from dlkit.data import open_source

    make_class_folders(tmp_path / "data" / split_name, ("蚂蚁", "蜜蜂"), per_class=10, size=8)
    source = open_source(str(tmp_path / "data"), val_split=0.2)
    assert source.classes == ["蚂蚁", "蜜蜂"] and source.layout == "train/val split folders"
    assert (len(source.train), len(source.val)) == (16, 4)
    assert any("validation is a stratified 0.2" in n for n in source.notes)


def test_a_class_named_train_beside_other_classes_stays_a_class(tmp_path):
    from fakedata import make_class_folders

    from dlkit.data import open_source

    make_class_folders(tmp_path / "vehicles", ("bus", "train"), per_class=5, size=8)
    assert open_source(str(tmp_path / "vehicles")).classes == ["bus", "train"]


def test_val_every_validates_within_epochs_and_stop_at_ends_the_run_where_it_is_reached(tmp_path):
    data = regression_csv(tmp_path / "t.csv", n=400)
    run = dlkit.train(data=str(data), target="y", epochs=50, batch_size=16, val_every=3, monitor="val_r2",
                      stop_at=0.9, out=str(tmp_path / "run"), **FAST)
    within = [r for r in run.history if r.get("within_epoch")]
    assert within and all(r["step"] % 3 == 0 for r in within)
    stopped = run.summary["stopped"]
    reached = next(r for r in run.history if r["val_r2"] >= 0.9)  # the first validation at or past the target
    assert stopped["step"] == reached["step"] and stopped["value"] == reached["val_r2"]
    assert run.summary["epochs"] < 50 and run.history[-1]["step"] == stopped["step"]  # no step after it
    assert stopped["seconds_from_process_start"] > 0 and "--stop-at 0.9" in stopped["reason"]
    metrics = json.loads((run.dir / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["step"] == 3 and metrics["within_epoch"]  # the first check, at step 3, is on disk
    timing = run.summary["timing"]
    assert timing["total_s"] >= timing["setup_s"] + timing["train_s"] + timing["val_s"] - 1e-6
    assert timing["val_s"] > 0 and timing["train_s"] > 0


def test_the_decoded_image_budget_follows_the_available_memory(tmp_path, monkeypatch, capsys):
    from fakedata import make_class_folders

    from dlkit import device
    from dlkit.data import loaders

    folder = make_class_folders(tmp_path / "imgs", ("a", "b"), per_class=6, size=16)
    monkeypatch.setattr(device, "available_memory", lambda: 8 * 2**30)
    assert loaders.memory_budget() == 4 * 2**30
    monkeypatch.setattr(device, "available_memory", lambda: 2000)  # 1,000 bytes: less than 12 images of 3x32x32
    dlkit.train(data=str(folder), epochs=1, model="softmax", out=str(tmp_path / "run"), tensorboard=False,
                report=False, workers=0, disk_cache=False)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("data:"))
    assert "streamed from files" in line and "half the available memory" in line


def test_young_batchnorm_statistics_are_explained_not_left_to_look_like_a_bug(capsys):
    """tv:resnet18 from scratch, 2 steps on hymenoptera: val loss 321 with running statistics, 2.26 with the batch's
    own (measured): the running statistics are the cause, and the run says so instead of looking broken."""
    from types import SimpleNamespace

    from dlkit.track.console import Console
    from dlkit.training.trainer import Trainer

    def check(batches_seen: int, val_loss: float) -> str:
        bn = torch.nn.BatchNorm2d(4)
        bn.num_batches_tracked.fill_(batches_seen)
        fake = SimpleNamespace(model=torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), bn), console=Console())
        Trainer._note_young_batchnorm(fake, {"val_loss": val_loss, "train_loss": 1.19})
        return capsys.readouterr().out

    assert "BatchNorm layers have seen only 2 batch(es)" in check(2, 321.0)
    assert check(2, 1.3) == ""     # validation no worse than training: nothing to explain
    assert check(500, 321.0) == ""  # statistics that have settled: a real problem, not this one


def test_digits_are_read_without_importing_scikit_learn_and_match_its_loader():
    import subprocess
    import sys

    code = ("import sys, dlkit.data.builtin as b; pixels, target = b._sklearn_digits(); "
            "print(pixels.shape, int(target.sum()), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False"  # not imported: reading the file is enough
    from sklearn.datasets import load_digits

    from dlkit.data.builtin import _sklearn_digits
    pixels, target = _sklearn_digits()
    bunch = load_digits()
    assert np.array_equal(pixels, bunch.data) and np.array_equal(target, bunch.target)


def test_a_table_run_with_embeddings_logs_its_metrics_to_tensorboard_and_summarises(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlkit.cli.main import main

    data = regression_csv(tmp_path / "t.csv")
    run = dlkit.train(data=str(data), target="y", epochs=3, categorical_encoding="embedding", report=False,
                      out=str(tmp_path / "run"), quiet=True)
    spec = dlkit.load(run.dir).spec
    assert spec.encoding == "embedding" and spec.cardinalities == [4]  # a, b, c and the unknown bucket
    events = EventAccumulator(str(run.dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "rmse/val", "mae/val", "r2/val"} <= tags
    rmse = [e.value for e in events.Scalars("rmse/val")]
    assert rmse == pytest.approx([r["val_rmse"] for r in run.history], rel=1e-5)
    assert main(["summary", str(run.dir)]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "Embedding" in out
