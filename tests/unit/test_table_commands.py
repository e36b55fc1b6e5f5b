"""The README's table commands beyond train: predict's CSV file (id column, --id-column, --overwrite, a missing
column), eval on another labelled table, show-data, summary of a bare table model, --target-transform, and the
synthetic-linear run that prints the learned w and b beside the true ones."""
import json
import re

import numpy as np
import pandas as pd
import pytest

import dlkit
from dlkit.cli.main import main

FAST = ["--epochs", "2", "--no-tensorboard", "--no-report", "-q"]


def flowers(n=90, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.repeat(["setosa", "versicolor", "virginica"], n // 3)
    size = np.repeat([1.0, 4.0, 7.0], n // 3) + rng.normal(0, 0.3, n)
    return pd.DataFrame({"passenger": np.arange(5000, 5000 + n), "size": size, "ticket": np.arange(n) * 7 + 3,
                         "shade": rng.choice(["light", "dark"], n), "label": label})


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    flowers().to_csv(root / "t.csv", index=False)
    assert main(["train", "--data", str(root / "t.csv"), "--target", "label", "--out", str(root / "run"),
                 "--epochs", "30", "--no-tensorboard", "--no-report", "-q"]) == 0
    return root


def one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_predict_writes_the_id_column_and_the_prediction_and_keeps_an_existing_file(table_run, capsys):
    test = flowers(seed=1).drop(columns=["label"]).sample(9, random_state=0)
    test.to_csv(table_run / "test.csv", index=False)
    out = table_run / "predictions.csv"
    assert main(["predict", str(table_run / "run"), str(table_run / "test.csv"), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    want = dlkit.load(table_run / "run").predict(str(table_run / "test.csv"))
    # the identifier found in training (`passenger`: a distinct whole number on every row), then class, probability
    assert list(written.columns) == ["passenger", "label", "probability"]
    assert written["passenger"].tolist() == test["passenger"].tolist()
    assert written["label"].tolist() == want["label"].tolist()
    assert written["probability"].to_numpy() == pytest.approx(want["probability"].to_numpy(), abs=1e-6)
    right = {1.0: "setosa", 4.0: "versicolor", 7.0: "virginica"}
    assert written["label"].tolist() == [right[min(right, key=lambda c: abs(c - s))] for s in test["size"]]

    before = out.read_bytes()
    capsys.readouterr()
    assert main(["predict", str(table_run / "run"), str(table_run / "test.csv"), "--out", str(out),
                 "--id-column", "ticket"]) == 2
    one_line_error(capsys, "already exists", "--overwrite")
    assert out.read_bytes() == before
    assert main(["predict", str(table_run / "run"), str(table_run / "test.csv"), "--out", str(out),
                 "--id-column", "ticket", "--overwrite"]) == 0
    again = pd.read_csv(out)
    assert list(again.columns) == ["ticket", "label", "probability"]  # the named column instead
    assert again["ticket"].tolist() == test["ticket"].tolist() and again["label"].tolist() == written["label"].tolist()


def test_predict_refuses_a_table_without_a_column_the_model_was_trained_on(table_run, capsys):
    flowers(seed=2).drop(columns=["label", "size"]).head(3).to_csv(table_run / "no-size.csv", index=False)
    capsys.readouterr()
    assert main(["predict", str(table_run / "run"), str(table_run / "no-size.csv"),
                 "--out", str(table_run / "p.csv")]) == 2
    one_line_error(capsys, "no column 'size'")
    assert not (table_run / "p.csv").exists()


def test_eval_scores_another_labelled_table(table_run, capsys):
    other = flowers(seed=3).sample(21, random_state=0)
    other.loc[other.index[:4], "label"] = "versicolor"  # some wrong labels: accuracy below 1, counted exactly
    other.to_csv(table_run / "other.csv", index=False)
    capsys.readouterr()
    assert main(["eval", str(table_run / "run"), "--data", str(table_run / "other.csv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    predicted = dlkit.load(table_run / "run").predict(str(table_run / "other.csv"))["label"]
    assert result["samples"] == 21
    assert result["accuracy"] == pytest.approx(float(np.mean(predicted.to_numpy() == other["label"].to_numpy())))


def test_show_data_says_what_training_does_with_every_column(table_run, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # show-data writes its figure into the working folder
    capsys.readouterr()
    assert main(["show-data", str(table_run / "t.csv"), "--target", "label"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in
             ("passenger", "size", "ticket", "shade", "label")}
    assert "left out: id" in lines["passenger"] and "numeric" in lines["size"]
    assert "categorical, 2 values" in lines["shade"] and "target (classification, 3 classes)" in lines["label"]
    assert "90 rows" in out


def parameters(capsys, *argv) -> int:
    capsys.readouterr()
    assert main(["summary", *argv]) == 0
    return int(re.search(r"parameters:\s+([\d,]+)", capsys.readouterr().out).group(1).replace(",", ""))


def test_summary_of_a_bare_table_model_takes_its_input_width(capsys):
    assert parameters(capsys, "linear", "--input", "24") == 24 * 10 + 10  # one Linear, 10 outputs by default
    assert parameters(capsys, "linear", "--input", "12") == 12 * 10 + 10
    assert parameters(capsys, "tabular", "--input", "24") > parameters(capsys, "tabular", "--input", "12")


@pytest.mark.parametrize("transform", ["log", "none", "standardize"])
def test_target_transform_is_the_one_asked_for_and_predictions_come_back_in_the_targets_units(
        transform, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=120)
    frame = pd.DataFrame({"x": x, "price": np.exp(3 + 0.5 * x)})  # positive and right-skewed: auto picks log
    frame.to_csv(tmp_path / "houses.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "houses.csv"), "--target", "price", "--target-transform", transform,
                 "--out", str(tmp_path / "run"), *FAST]) == 0
    predictor = dlkit.load(tmp_path / "run")
    assert predictor.spec.target_scale["transform"] == transform
    encoded = predictor.spec.encode_target(frame["price"])
    decoded = predictor.spec.make_task().scale.decode(encoded).numpy()
    np.testing.assert_allclose(decoded, frame["price"].to_numpy(), rtol=1e-5)  # the units come back
    if transform == "none":
        np.testing.assert_allclose(encoded.numpy().ravel(), frame["price"].to_numpy(), rtol=1e-6)
    if transform == "log":
        # the logarithm, standardised with the training split's mean and std: an increasing affine map of log(price)
        logs = np.log(frame["price"].to_numpy())
        slope, _ = np.polyfit(logs, encoded.numpy().ravel(), 1)
        assert slope > 0 and np.corrcoef(logs, encoded.numpy().ravel())[0, 1] > 1 - 1e-9


def test_synthetic_linear_with_the_linear_model_prints_the_learned_w_and_b_beside_the_true_ones(tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", "--data", "synthetic-linear", "--model", "linear", "--data-arg", "w=2,-3.4",
                 "--data-arg", "b=4.2", "--out", str(tmp_path / "run"), "--no-tensorboard", "--no-report"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"learned w = \[(.+?)\], b = (\S+)\s+\(true w = \[2, -3.4\], b = 4.2\)", out)
    assert found, out
    learned = [float(v) for v in found.group(1).split(",")] + [float(found.group(2))]
    assert learned == pytest.approx([2, -3.4, 4.2], abs=0.2)  # ~260 steps of the recipe get it close


def test_a_table_models_summary_speaks_of_rows_not_images(capsys):
    assert main(["summary", "tabular", "--input", "12"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tabular on rows of 12 features")
    assert "FLOPs per row forward" in out and "FLOPs per row to train" in out and " per row) + input" in out
    assert "image" not in out
    assert main(["summary", "lenet", "--input", "1x28x28"]) == 0  # an image model's still per image
    assert "FLOPs per image forward" in capsys.readouterr().out
