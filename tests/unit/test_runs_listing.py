"""`dlkit runs`: a CV folder is listed (a row for it, its folds beneath), and "wall s" is the run's one wall time,
the figure its closing line printed (process start to the run's end)."""
import json
import re

import numpy as np
import pandas as pd
import pytest

import dlkit
from dlkit.cli.main import main

FAST = {"tensorboard": False, "report": False, "quiet": True}


def small_table(path, n=40):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=n), "kind": rng.choice(["a", "b"], n)})
    frame["y"] = np.where(frame["x"] > 0, "up", "down")
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = small_table(root / "t.csv")
    dlkit.cross_validate(data=str(data), target="y", folds=2, epochs=2, out=str(root / "runs" / "cv-t"), **FAST)
    return root, data


def test_a_cv_folder_is_a_row_with_its_folds_beneath(runs, capsys):
    root, _ = runs
    assert main(["runs", str(root / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["kind"]) for r in rows] == [("cv-t", "cv"), ("cv-t/fold-1", "member"),
                                                      ("cv-t/fold-2", "member")]
    cv = json.loads((root / "runs" / "cv-t" / "cv.json").read_text())
    assert rows[0]["wall_s"] == cv["wall_s"] > 0 and rows[0]["best_val_acc"] == pytest.approx(cv["mean"]["val_acc"])
    assert "± " in rows[0]["best"] and "mean of 2" in rows[0]["best"]
    assert rows[1]["wall_s"] is None and rows[1]["train_s"] > 0  # a fold has no process of its own
    assert main(["runs", str(root / "runs")]) == 0
    text = capsys.readouterr().out
    assert "\n  cv-t/fold-1" in text and "wall s: process start" in text
    assert main(["runs", str(root / "runs" / "cv-t"), "--json"]) == 0  # the CV folder itself: its folds alone
    folds = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in folds] == ["fold-1", "fold-2"] and all(r["wall_s"] is None for r in folds)


def test_wall_s_is_the_time_the_closing_line_printed(runs, capsys):
    root, data = runs
    run = root / "runs" / "plain"
    assert main(["train", "--data", str(data), "--target", "y", "--epochs", "2", "--out", str(run),
                 "--no-tensorboard", "--no-report"]) == 0
    printed = float(re.search(r"time:\s+([\d.]+)s from process start", capsys.readouterr().out).group(1))
    assert main(["runs", str(root / "runs"), "--sort", "wall_s", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "plain")
    summary = json.loads((run / "summary.json").read_text())
    # printed to 0.1 s: a total of 415.05 prints as 415.1, a hair over 0.05 away in floating point
    assert row["wall_s"] == summary["timing"]["total_s"] == pytest.approx(printed, abs=0.051)
    assert row["train_s"] == summary["timing"]["train_s"] < row["wall_s"]
    # summary.json's own wall_s is the same figure; the fit loop's is fit_s (it was wall_s: 0.8 s beside 8.4 s)
    assert summary["wall_s"] == summary["timing"]["total_s"]
    # each figure is rounded to 0.01 s on its own: allow two roundings
    assert summary["timing"]["train_s"] <= summary["fit_s"] <= summary["wall_s"] - summary["timing"]["setup_s"] + 0.02


def test_a_runs_repr_gives_the_same_wall_time(runs):
    root, data = runs
    run = dlkit.train(data=str(data), target="y", epochs=1, out=str(root / "py-run"), **FAST)
    summary = json.loads((root / "py-run" / "summary.json").read_text())
    assert run.summary["wall_s"] == summary["wall_s"] == summary["timing"]["total_s"] > summary["fit_s"]
    assert f", {summary['wall_s']}s on " in repr(run)
