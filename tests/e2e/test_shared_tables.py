"""End-to-end CLI runs on the real tables in ../shared/data/tabular: train, eval, predict to a CSV, cross-validate."""
import csv
import json

import pytest
from test_shared_data import SHARED, dlkit

pytestmark = pytest.mark.e2e


def table(name: str):
    path = SHARED / "tabular" / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared tables live beside the repo in ../shared/data/tabular)")
    return path


def test_penguins_classifier_trains_evaluates_and_writes_a_predictions_file(tmp_path):
    data, run = table("penguins.csv"), tmp_path / "penguins"
    proc = dlkit("train", "--data", data, "--target", "species", "--epochs", 8, "--out", run, "--json",
                 "--no-tensorboard")
    summary = json.loads(proc.stdout)
    assert summary["task"] == "classification" and summary["monitor"] == "val_acc"
    assert summary["best_val_acc"] >= 0.95  # 69 held-out penguins; the classes separate well
    assert "regression" not in proc.stderr and "classification" in proc.stderr  # the task is printed
    metrics = json.loads(dlkit("eval", run, "--json").stdout)
    assert metrics["accuracy"] == pytest.approx(summary["best_val_acc"], abs=1e-6)  # same split, same model
    assert [c["class"] for c in metrics["per_class"]] == ["Adelie", "Chinstrap", "Gentoo"]
    # new rows: no target, an unseen island, a missing sex, and an extra column
    rows = tmp_path / "new.csv"
    rows.write_text("id,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year,colour\n"
                    "a,Biscoe,47.5,14.2,217,5000,female,2008,grey\n"
                    "b,Atlantis,39.0,18.5,185,3600,,2009,grey\n")
    out = tmp_path / "predictions.csv"
    proc = dlkit("predict", run, rows, "--out", out, "--id-column", "id")
    assert "unseen categories" in proc.stdout and "island (1 row(s))" in proc.stdout
    assert "ignored column(s)" in proc.stdout and "colour" in proc.stdout
    written = list(csv.DictReader(out.open()))
    assert [r["id"] for r in written] == ["a", "b"]
    assert written[0]["species"] == "Gentoo" and written[1]["species"] == "Adelie"  # bill/flipper shapes of each
    assert all(0.3 < float(r["probability"]) <= 1 for r in written)
    report = (run / "report.html").read_text()
    assert "permutation importance" in report and "bill_length_mm" in report


def test_houses_cross_validation_refit_and_a_submission_file(tmp_path):
    data, folder = table("saratoga-houses.csv"), tmp_path / "cv"
    proc = dlkit("cv", "--data", data, "--target", "price", "--folds", 3, "--epochs", 6, "--refit", "--out", folder,
                 "--json", "--no-tensorboard", "--no-report")
    summary = json.loads(proc.stdout)
    assert [f["fold"] for f in summary["folds"]] == [1, 2, 3]
    assert sum(f["rows"] for f in summary["folds"]) == 1728  # every row validated exactly once
    assert 0.15 < summary["mean"]["val_rmsle"] < 0.5 and summary["std"]["val_rmsle"] > 0
    assert summary["mean"]["val_r2"] > 0.3
    assert "log" in proc.stderr  # the skewed price is learned as a logarithm, and the note says so
    for fold in summary["folds"]:  # each fold is a normal run that eval reproduces
        again = json.loads(dlkit("eval", fold["run_dir"], "--json").stdout)
        assert again["rmse"] == pytest.approx(fold["val_rmse"], rel=1e-5)
    assert (folder / "cv.png").is_file() and (folder / "cv.md").is_file()
    out = tmp_path / "submission.csv"
    dlkit("predict", folder, data, "--out", out)  # the refit model
    prices = [float(r["price"]) for r in csv.DictReader(out.open())]
    assert len(prices) == 1728 and 20_000 < min(prices) and max(prices) < 2_000_000  # dollars, not log-dollars
