"""Per-row attributions for table models: on rows whose target depends on two columns only (a number and a
category), those two rank first for most rows; the effects add up to the prediction minus the reference row's;
a category's one-hot block is one column; the CLI adds them to its output and refuses bad tables in one line."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("captum", reason="explanations need Captum (the explain extra)")

import dlkit  # noqa: E402
from dlkit.infer.explain_table import strongest  # noqa: E402

INPUTS = ["a", "b", "c", "d", "e", "colour", "flag"]
CAUSES = {"b", "colour"}


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=n) for c in "abcde"})
    frame["colour"] = rng.choice(["red", "green", "blue", "grey"], n)
    frame["flag"] = rng.choice(["yes", "no"], n)
    return frame


def target(frame: pd.DataFrame, task: str):
    red = (frame["colour"] == "red").to_numpy()
    if task == "regression":
        return 3 * frame["b"].to_numpy() - 4 * red
    return np.where(frame["b"].to_numpy() + 2.5 * red - 0.8 > 0, "high", "low")


def train(tmp_path_factory, task: str, **options):
    folder = tmp_path_factory.mktemp(task)
    frame = rows(600, seed=0)
    frame["y"] = target(frame, task)
    frame.to_csv(folder / "train.csv", index=False)
    return dlkit.train(data=str(folder / "train.csv"), target="y", model="mlp", epochs=15, out=str(folder / "run"),
                       quiet=True, tensorboard=False, report=False, **options)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    return train(tmp_path_factory, "regression")


@pytest.fixture(scope="module")
def classes_run(tmp_path_factory):
    return train(tmp_path_factory, "classification", categorical_encoding="embedding")


def causes_first(effects: pd.DataFrame) -> float:
    """The share of rows whose two strongest columns are the two the target depends on."""
    return float(np.mean([{c for c, _ in pairs[:2]} == CAUSES for pairs in strongest(effects, 2)]))


def test_the_check_fails_for_random_effects():
    fake = pd.DataFrame(np.random.default_rng(0).normal(size=(200, len(INPUTS))), columns=INPUTS)
    assert causes_first(fake) < 0.2


def test_the_two_columns_the_target_depends_on_rank_first(regression_run):
    explained = dlkit.load(regression_run.dir).explain(rows(200, seed=1), top=3)
    effects = explained.attrs["effects"]
    assert list(effects.columns) == INPUTS  # the one-hot block of colour is one column, as the user sees it
    assert causes_first(effects) >= 0.9
    first = explained["explanation"].iloc[0]
    assert first.count(",") == 2 and first.split()[0] in CAUSES


def test_effects_add_up_to_the_prediction_minus_the_reference_rows(regression_run):
    predictor = dlkit.load(regression_run.dir)
    explained = predictor.explain(rows(50, seed=2))
    reference = float(predictor.task.values(predictor.outputs(torch.zeros(1, predictor.spec.numeric_width)))[0])
    total = explained.attrs["effects"].sum(axis=1).to_numpy()
    assert np.allclose(total, explained["y"].to_numpy() - reference, atol=0.05 * np.abs(total).max())


def test_a_classifier_with_category_embeddings_is_explained_too(classes_run):
    explained = dlkit.load(classes_run.dir).explain(rows(200, seed=1))
    assert set(explained["y"]) == {"high", "low"}
    assert causes_first(explained.attrs["effects"]) >= 0.6  # the colour's codes: the change to the unknown bucket


def dlkit_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlkit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_predict_explain_adds_the_columns_to_json_and_csv(regression_run, tmp_path):
    rows(5, seed=3).to_csv(tmp_path / "rows.csv", index=False)
    result = dlkit_cli("predict", regression_run.dir, tmp_path / "rows.csv", "--explain", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 5 and all(len(r["explanation"]) == 3 for r in records)
    assert {e["column"] for r in records for e in r["explanation"][:2]} <= set(INPUTS)
    assert "integrated gradients" in result.stderr
    out = tmp_path / "predictions.csv"
    result = dlkit_cli("predict", regression_run.dir, tmp_path / "rows.csv", "--explain", "--out", out)
    assert result.returncode == 0 and list(pd.read_csv(out).columns) == ["y", "explanation"]


def test_predict_explain_refuses_a_table_missing_a_column(regression_run, tmp_path):
    rows(5, seed=3).drop(columns="colour").to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "predictions.csv"
    result = dlkit_cli("predict", regression_run.dir, tmp_path / "rows.csv", "--explain", "--out", out)
    assert result.returncode == 2 and not out.exists() and "Traceback" not in result.stderr
    assert "no column 'colour'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
