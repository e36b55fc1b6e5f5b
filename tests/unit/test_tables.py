"""Tables: reading odd files, inferring columns and the task, preprocessing fitted on training rows only, the
built-in tables, telling tables from image manifests, and `dlkit train --data FILE.csv --target COL` end to end."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import dlkit
import dlkit.data.table_reading as table_reading
from dlkit.cli.main import main
from dlkit.data.modality import open_table
from dlkit.data.table_builtins import TABLE_BUILTINS, is_table
from dlkit.data.table_reading import ColumnChoice, infer_columns, infer_task, read_table
from dlkit.data.tables import TableSpec
from dlkit.errors import UserError

FAST = ["--epochs", "1", "--batch-size", "16", "--no-tensorboard", "--no-report"]


def regression_frame(n=80, seed=0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n)
    y = 3 * x1 - 2 * x2 + (color == "red") + rng.normal(0, 0.1, n)
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "y": y})


def classes_frame(n=90, seed=0):
    rng = np.random.default_rng(seed)
    label = np.repeat(["setosa", "versicolor", "virginica"], n // 3)
    size = np.repeat([1.0, 4.0, 7.0], n // 3) + rng.normal(0, 0.3, n)
    return pd.DataFrame({"size": size, "shade": rng.choice(["light", "dark"], n), "label": label})


def write_csv(path, frame):
    frame.to_csv(path, index=False)
    return path


def train(data, target, out, capsys, *extra):
    code = main(["train", "--data", str(data), "--target", target, "--out", str(out), *FAST, *map(str, extra)])
    return code, capsys.readouterr()


def assert_one_line_error(code, out, message):
    assert code == 2, out
    assert out.err.startswith("error: ") and out.err.count("\n") == 1, out.err
    assert message in out.err and "Traceback" not in out.err, out.err


# ---- bad input: a one-line error, or a note when the run can go on -------------------------------------------------

@pytest.mark.parametrize("text,argv,message", [
    ("", ["--target", "y"], "is empty"),
    ("x1,x2,y\n", ["--target", "y"], "has a header but no data rows"),
    ("x,price\n" + "".join(f"{i},{i * 2.5}\n" for i in range(30)), ["--target", "prise"], "did you mean price"),
    ("x,y\n" + "".join(f"{i},\n" for i in range(30)), ["--target", "y"], "empty on every row"),
    ("x,y\n" + "".join(f"{i},cat\n" for i in range(30)), ["--target", "y"], "only one class"),
    ("x,y\n" + "".join(f"{i},{'cat' if i % 2 else 'dog'}\n" for i in range(30)),
     ["--target", "y", "--task", "regression"], "needs a numeric target"),
])
def test_bad_tables_are_one_line_errors(text, argv, message, tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text(text)
    code = main(["train", "--data", str(path), "--out", str(tmp_path / "run"), *FAST, *argv])
    assert_one_line_error(code, capsys.readouterr(), message)
    assert not (tmp_path / "run").exists()


def test_a_table_error_prints_no_traceback_in_a_real_process(tmp_path):
    (tmp_path / "t.csv").write_text("x1,x2,y\n")
    proc = subprocess.run([sys.executable, "-m", "dlkit.cli.main", "train", "--data", "t.csv", "--target", "y"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "no data rows" in proc.stderr and "Traceback" not in proc.stderr


def test_rows_with_a_missing_target_are_dropped_and_counted(tmp_path, capsys):
    frame = regression_frame(60)
    frame.loc[[3, 10, 41], "y"] = np.nan
    code, out = train(write_csv(tmp_path / "t.csv", frame), "y", tmp_path / "run", capsys)
    assert code == 0, out.err
    assert "warning: dropped 3 row(s) with no value in the target 'y'" in out.out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train_samples"] + summary["val_samples"] == 57


def test_a_column_of_mixed_numbers_and_text_is_named_and_numeric_reads_text_as_missing(tmp_path, capsys):
    frame = regression_frame(60)
    frame["dose"] = [str(round(v, 3)) for v in np.random.default_rng(1).uniform(1, 5, 60)]
    frame.loc[[5, 20], "dose"] = "high"
    path = write_csv(tmp_path / "t.csv", frame)
    code, out = train(path, "y", tmp_path / "run", capsys)
    assert code == 0, out.err
    assert any("dose" in line and "mixed numbers and text" in line for line in out.out.splitlines()
               if line.startswith("note:")), out.out
    code, out = train(path, "y", tmp_path / "run2", capsys, "--numeric", "dose")
    assert code == 0, out.err
    assert (tmp_path / "run2" / "checkpoints" / "best.safetensors").is_file()


def test_semicolon_separated_file_is_sniffed(tmp_path, capsys):
    path = tmp_path / "t.csv"
    regression_frame(50).to_csv(path, index=False, sep=";")
    frame, notes = read_table(path)
    assert list(frame.columns) == ["x1", "x2", "color", "y"] and len(frame) == 50
    assert frame["x1"].dtype == float and any("';'" in n for n in notes)
    code, out = train(path, "y", tmp_path / "run", capsys)
    assert code == 0 and "50 rows x 4 columns" in out.out


def test_latin1_bytes_are_read_with_a_note(tmp_path, capsys):
    frame = regression_frame(50)
    frame["color"] = np.where(frame["color"] == "red", "café", frame["color"])
    path = tmp_path / "t.csv"
    path.write_bytes(frame.to_csv(index=False).encode("latin-1"))
    read, notes = read_table(path)
    assert "café" in set(read["color"]) and any("Latin-1" in n for n in notes)
    code, out = train(path, "y", tmp_path / "run", capsys)
    assert code == 0 and "Latin-1" in out.out


def test_quoted_newlines_inside_a_field(tmp_path, capsys):
    frame = regression_frame(40)
    frame["remark"] = [f"first line {i}\nsecond line" for i in range(40)]
    path = write_csv(tmp_path / "t.csv", frame)
    read, _ = read_table(path)
    assert read.shape == (40, 5) and read["remark"][7] == "first line 7\nsecond line"
    assert train(path, "y", tmp_path / "run", capsys)[0] == 0


def test_duplicate_column_names_get_a_note(tmp_path, capsys):
    frame = regression_frame(40)
    path = tmp_path / "t.csv"
    path.write_text("x1,x1,color,y\n" + frame.to_csv(index=False, header=False))
    read, notes = read_table(path)
    assert list(read.columns) == ["x1", "x1.1", "color", "y"] and any("duplicate" in n and "x1" in n for n in notes)
    code, out = train(path, "y", tmp_path / "run", capsys)
    assert code == 0 and "note: duplicate column name(s) x1" in out.out


def test_infinite_values_are_missing_with_a_note(tmp_path, capsys):
    frame = regression_frame(40)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[[2, 9], "x1"] = ["inf", "-inf"]
    path = write_csv(tmp_path / "t.csv", frame)
    read, notes = read_table(path)
    assert read["x1"].isna().tolist() == [i in (2, 9) for i in range(40)]
    assert any("infinite" in n and "x1" in n for n in notes)
    code, out = train(path, "y", tmp_path / "run", capsys)
    assert code == 0 and "note: infinite values treated as missing in column(s) x1" in out.out


def test_a_file_too_large_for_memory_is_refused_by_size(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "t.csv", regression_frame(40))
    monkeypatch.setattr(table_reading, "available_memory", lambda: 1000)
    with pytest.raises(UserError, match=r"is 0\.0 GiB, too large to load here"):
        read_table(path)
    need = 3 * path.stat().st_size  # pandas takes a few times a text file's size while parsing it
    monkeypatch.setattr(table_reading, "available_memory", lambda: need)
    assert len(read_table(path)[0]) == 40  # just enough: read
    monkeypatch.setattr(table_reading, "available_memory", lambda: need - 1)
    with pytest.raises(UserError, match="too large to load here"):
        read_table(path)


# ---- what every column is ------------------------------------------------------------------------------------------

def columns_frame(n=60):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "Unnamed: 0": np.arange(n), "customer": [f"C{i:04d}" for i in range(n)], "weight": rng.normal(70, 10, n),
        "constant": 7, "comment": [f"the parcel number {i} arrived {['late', 'early'][i % 2]}" for i in range(n)],
        "member": rng.choice(["yes", "no"], n), "color": rng.choice(["red", "green", "blue"], n),
        "y": rng.normal(size=n)})


def test_column_kinds_are_inferred():
    frame = columns_frame()
    kinds = {c.name: c.kind for c in infer_columns(frame, "y")}
    assert kinds == {"Unnamed: 0": "id", "customer": "id", "weight": "numeric", "constant": "constant", "comment": "text",
                     "member": "boolean", "color": "categorical"}
    spec = TableSpec.fit(frame, "y", "regression", infer_columns(frame, "y"))
    assert [c["name"] for c in spec.columns] == ["weight", "member", "color"] and spec.id_column == "Unnamed: 0"
    assert {s["name"]: s["kind"] for s in spec.skipped} == {"Unnamed: 0": "id", "customer": "id",
                                                            "constant": "constant", "comment": "text"}
    assert spec.columns[2]["vocab"] == ["\0unknown", "blue", "green", "red"]
    x, groups = spec.transform(frame), dict(spec.feature_groups())
    assert x[:, groups["member"][0]].tolist() == (frame["member"] == "yes").astype(float).tolist()


def test_column_overrides_win():
    frame = columns_frame()
    kinds = {c.name: c.kind for c in infer_columns(frame, "y", drop=["color"], categorical=["Unnamed: 0"],
                                                   numeric=["customer"], id_column="weight")}
    assert kinds["color"] == "dropped" and kinds["Unnamed: 0"] == "categorical"
    assert kinds["customer"] == "numeric" and kinds["weight"] == "id"
    with pytest.raises(UserError, match="did you mean weight"):
        infer_columns(frame, "y", drop=["wieght"])


# ---- preprocessing is fitted on the training rows only -------------------------------------------------------------

def test_spec_is_fitted_on_training_rows_and_applied_to_new_ones():
    n = 40
    frame = pd.DataFrame({"x": np.r_[np.arange(1.0, 21.0), np.arange(100.0, 120.0)],
                          "m": np.r_[np.arange(1.0, 21.0), np.arange(1.0, 21.0)],
                          "c": ["a", "b"] * 10 + ["a", "z"] * 10, "y": np.arange(n, dtype=float)})
    frame.loc[25, "m"] = np.nan
    first, second = frame.iloc[:20], frame.iloc[20:].reset_index(drop=True)
    choices = [ColumnChoice("x", "numeric"), ColumnChoice("m", "numeric"), ColumnChoice("c", "categorical")]
    spec = TableSpec.fit(first, "y", "regression", choices)
    x, m, c = spec.columns
    assert x["center"] == x["fill"] == 10.5 and np.median(frame["x"]) != 10.5
    assert m["fill"] == 10.5 and not m["missing_indicator"]
    assert c["vocab"] == ["\0unknown", "a", "b"]
    out, groups = spec.transform(second), dict(spec.feature_groups())
    assert out.shape == (20, 2 + 3)
    unseen = (second["c"] == "z").to_numpy()
    assert out[unseen][:, groups["c"]].tolist() == [[1.0, 0.0, 0.0]] * 10
    assert out[~unseen][:, groups["c"]].tolist() == [[0.0, 1.0, 0.0]] * 10
    filled = second.copy()
    filled.loc[5, "m"] = 10.5
    assert out[5, groups["m"][0]] == spec.transform(filled)[5, groups["m"][0]] == 0.0


def test_numbers_are_scaled_by_median_and_iqr_with_smooth_clipping_or_by_mean_and_std():
    x = np.arange(101.0)  # median 50, quartiles 25 and 75: IQR 50
    frame = pd.DataFrame({"x": x, "y": x})
    robust = TableSpec.fit(frame, "y", "regression", [ColumnChoice("x", "numeric")])
    c = robust.columns[0]
    assert robust.scaling == "robust" and c["center"] == 50 and c["scale"] == pytest.approx(50 / 1.349)
    new = pd.DataFrame({"x": [50.0, 50 + 50 / 1.349, 50 - 3 * 50 / 1.349, 1e9]})
    z = np.array([0.0, 1.0, -3.0, 1e9])  # in IQR units; then z / sqrt(1 + (z / 3)^2), bounded by 3
    assert robust.transform(new)[:, 0].tolist() == pytest.approx((z / np.sqrt(1 + (z / 3) ** 2)).tolist(), rel=1e-5)
    assert robust.transform(new)[3, 0] == pytest.approx(3.0, rel=1e-5)  # an outlier is held near 3, not 2e7

    standard = TableSpec.fit(frame, "y", "regression", [ColumnChoice("x", "numeric")], scaling="standard")
    assert standard.transform(new)[:, 0].tolist() == pytest.approx(((new["x"] - x.mean()) / x.std()).tolist(),
                                                                  rel=1e-5)  # no clipping


def test_training_rows_with_gaps_add_a_missing_indicator_used_on_new_rows():
    frame = pd.DataFrame({"gaps": [1.0, np.nan, 3.0, 5.0, np.nan, 7.0], "full": np.arange(6.0), "y": np.arange(6.0)})
    spec = TableSpec.fit(frame, "y", "regression", [ColumnChoice("gaps", "numeric"), ColumnChoice("full", "numeric")])
    gaps, full = spec.columns
    assert gaps["missing_indicator"] and not full["missing_indicator"] and gaps["fill"] == 4.0
    groups = dict(spec.feature_groups())
    assert len(groups["gaps"]) == 2 and len(groups["full"]) == 1  # the value and its flag; the value alone
    out = spec.transform(pd.DataFrame({"gaps": [np.nan, 4.0, 9.0], "full": [np.nan, 1.0, 2.0]}))
    value, flag = groups["gaps"]
    assert out[:, flag].tolist() == [1.0, 0.0, 0.0] and out[0, value] == out[1, value] == 0.0  # the median, flagged
    assert "missing indicator" in " ".join(spec.describe())


def test_the_table_recipe_fits_batch_size_and_epochs_to_the_rows():
    from dlkit.config import make_config
    from dlkit.recipes import RECIPES, Fitting

    def fit(cfg, rows):
        return RECIPES.get(cfg.recipe).fitted(cfg, Fitting(rows, "cpu"))[0]

    cfg = make_config({"data": "iris"})
    assert cfg.recipe == "table" and {"batch_size", "epochs", "lr"} <= set(cfg.recipe_defaults)
    fitted = {rows: fit(cfg, rows) for rows in (10, 64, 1600, 100_000)}
    # batch: rows/8 rounded down to a power of two, 16 to 256; epochs: >= 200 steps, 20 to 100
    assert {rows: (c.batch_size, c.epochs) for rows, c in fitted.items()} == {
        10: (16, 100), 64: (16, 50), 1600: (128, 20), 100_000: (256, 20)}
    assert fitted[64].lr == cfg.lr == 4e-3 and fit(make_config({"data": "iris", "model": "linear"}), 64).lr == 2e-2
    mine = fit(make_config({"data": "iris", "batch_size": 32, "epochs": 3, "lr": 0.1}), 1600)
    assert (mine.batch_size, mine.epochs, mine.lr) == (32, 3, 0.1)  # what the user set stays


def test_text_in_a_numeric_column_of_new_rows_is_reported_by_row():
    train_rows = pd.DataFrame({"x": np.arange(20.0), "y": np.arange(20.0)})
    spec = TableSpec.fit(train_rows, "y", "regression", [ColumnChoice("x", "numeric")])
    new = pd.DataFrame({"x": ["1.5", "2", "oops"], "y": ["1", "2", "3"]})
    with pytest.raises(UserError, match=r"row 4: column 'x' holds 'oops', not a number"):
        spec.transform(new, "new.csv")
    with pytest.raises(UserError, match=r"row 3: column 'y' holds 'n/a', not a number"):
        spec.encode_target(pd.Series(["1", "n/a", "3"], name="y"), "new.csv")


# ---- the task and the target ---------------------------------------------------------------------------------------

def test_task_inference_and_override():
    rng = np.random.default_rng(0)
    floats, three = pd.Series(rng.normal(size=50)), pd.Series([0, 1, 2] * 10)
    assert infer_task(floats) == "regression"
    assert infer_task(three) == "classification"
    assert infer_task(pd.Series(["cat", "dog"] * 10)) == "classification"
    assert infer_task(three, "regression") == "regression"
    assert infer_task(floats, "classification") == "classification"


def test_a_skewed_positive_target_is_learned_as_its_log_and_decodes_back():
    frame = pd.DataFrame({"x": np.arange(200.0), "y": np.exp(np.random.default_rng(0).normal(3, 1, 200))})
    notes = []
    spec = TableSpec.fit(frame, "y", "regression", [ColumnChoice("x", "numeric")], notes=notes)
    assert spec.target_scale["transform"] == "log" and any("right-skewed" in n for n in notes)
    back = spec.make_task().scale.decode(spec.encode_target(frame["y"])).numpy()
    np.testing.assert_allclose(back, frame["y"].to_numpy(), rtol=1e-6)
    frame["y"] = np.random.default_rng(0).normal(size=200)
    assert TableSpec.fit(frame, "y", "regression", [ColumnChoice("x", "numeric")]).target_scale["transform"] \
        == "standardize"


# ---- built-in tables and what counts as a table ---------------------------------------------------------------------

def test_builtin_tables_load_offline():
    iris = open_table("iris", None)
    assert iris.task == "classification" and len(iris.frame) == 150 and len(iris.class_names) == 3
    diabetes = open_table("diabetes", None)
    assert diabetes.task == "regression" and len(diabetes.frame) == 442 and diabetes.target == "target"
    synthetic = open_table("synthetic-linear", None, data_args={"w": [2, -3.4], "b": 4.2})
    assert synthetic.task == "regression" and "synthetic-linear" in TABLE_BUILTINS
    frame = synthetic.frame
    design = np.c_[frame[["x1", "x2"]].to_numpy(), np.ones(len(frame))]
    solution = np.linalg.lstsq(design, frame["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(solution, [2, -3.4, 4.2], atol=0.05)


def test_is_table_tells_tables_from_image_manifests(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label\na.png,cat\nb.png,dog\n")
    (tmp_path / "bare.csv").write_text("img/a.jpg,cat\nimg/b.jpg,dog\n")
    assert not is_table(str(tmp_path / "manifest.csv")) and not is_table(str(tmp_path / "bare.csv"))
    frame = regression_frame(20)
    assert is_table(str(write_csv(tmp_path / "numbers.csv", frame)))
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    assert is_table(str(tmp_path / "t.tsv")) and is_table(str(tmp_path / "t.parquet"))
    assert is_table("iris") and not is_table(str(tmp_path / "missing.csv"))
    assert list(read_table(tmp_path / "t.parquet")[0].columns) == list(frame.columns)


# ---- end to end ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [None])  # linear and mlp: below, with the recipe, for quality too
@pytest.mark.parametrize("make,target,task", [(regression_frame, "y", "regression"),
                                              (classes_frame, "label", "classification")])
def test_train_on_a_csv_end_to_end(make, target, task, model, tmp_path, capsys):
    path, run = write_csv(tmp_path / "t.csv", make()), tmp_path / "run"
    code, out = train(path, target, run, capsys, "--epochs", 2, *(["--model", model] if model else []))
    assert code == 0, out.err
    summary = json.loads((run / "summary.json").read_text())
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert summary["task"] == task and summary["model"] == (model or "tabular") and summary["epochs"] == 2


@pytest.mark.parametrize("model", ["linear", "mlp"])
@pytest.mark.parametrize("make,target,metric,least", [(regression_frame, "y", "val_r2", 0.95),
                                                      (classes_frame, "label", "val_acc", 0.95)])
def test_linear_and_mlp_learn_a_simple_table_with_the_recipe(make, target, metric, least, model, tmp_path, capsys):
    # y is linear in the inputs, the classes a threshold on one: a constant predictor gets R^2 <= 0 and 1/3
    path, run = write_csv(tmp_path / "t.csv", make()), tmp_path / "run"
    code = main(["train", "--data", str(path), "--target", target, "--model", model, "--out", str(run),
                 "--no-tensorboard", "--no-report", "-q"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == model and (run / "checkpoints" / "best.safetensors").is_file()
    assert summary["best_metrics"][metric] >= least, summary["best_metrics"]
    # --numeric-scaling auto: standard for linear (no clipping to bend its inputs), robust for the MLP
    assert dlkit.load(run).spec.scaling == ("standard" if model == "linear" else "robust")


def test_train_on_a_csv_in_a_real_process(tmp_path):
    write_csv(tmp_path / "t.csv", regression_frame())
    proc = subprocess.run([sys.executable, "-m", "dlkit.cli.main", "train", "--data", "t.csv", "--target", "y",
                           "--out", "run", *FAST], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["task"] == "regression"
    assert (tmp_path / "run" / "checkpoints" / "best.safetensors").is_file()
