"""K-fold cross-validation of dlkit's default tabular recipe against reference methods, on the same folds, in this
process: the d2l Kaggle house-price recipe (a linear net), scikit-learn's RidgeCV / LogisticRegression and
HistGradientBoosting. Each reference does its own preprocessing inside each fold; seconds cover all folds with the
preprocessing included (file reading and imports excluded, for every method alike).

    python benchmarks/tabular.py                          # the shared saratoga-houses (price) and penguins (species)
    python benchmarks/tabular.py --data my.csv --target y --folds 5 --seed 0 --only dlkit,hgb
    python benchmarks/tabular.py --synthetic              # 3,000 x 80 house-like table: the <= 30 s speed goal
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED  # noqa: E402

TABLES = [(SHARED / "tabular" / "saratoga-houses.csv", "price"), (SHARED / "tabular" / "penguins.csv", "species")]
GOAL_S = 30.0  # 5-fold CV, 3,000 rows x 80 columns, 2-core CPU, preprocessing included
METHODS = ("dlkit", "d2l", "ridge", "hgb")


# ---- the data and the folds, as dlkit makes them ---------------------------------------------------------------------

def load(path: Path, target: str):
    """dlkit's own reading of the table (rows lacking a target dropped, the task inferred), shared by every method."""
    from dlkit.data.modality import open_table

    return open_table(str(path), target)


def folds(source, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds dlkit's `cv` trains on (its own seeded K-fold, stratified for classes), so every method sees them."""
    from dlkit.data.source import holdout_indices

    labels = source.labels()
    return [tuple(part.numpy() for part in holdout_indices(len(source.frame), labels, 0.2, seed, k, i))
            for i in range(k)]


def features(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Inputs for the references: every column but the target, less identifier-like ones (a distinct integer or text
    value on every row), which dlkit leaves out too; booleans count as numbers."""
    x = frame.drop(columns=[target])
    ids = [c for c in x.columns if x[c].nunique() == len(x)
           and (pd.api.types.is_integer_dtype(x[c]) or pd.api.types.is_object_dtype(x[c])
                or pd.api.types.is_string_dtype(x[c]))]
    x = x.drop(columns=ids)
    bools = x.select_dtypes(include="bool").columns
    x[bools] = x[bools].astype(float)
    return x


def one_hot_standardised(train: pd.DataFrame, val: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The d2l house-price preprocessing, fitted on the training fold only (d2l fits it on train and test together;
    here that would leak the validation fold): numbers standardised then missing -> 0, text one-hot with a NaN
    column."""
    numeric = train.select_dtypes(include="number").columns
    mean, std = train[numeric].mean(), train[numeric].std().replace(0, 1)  # a constant column becomes all 0, as in d2l
    parts = []
    for part in (train, val):
        nums = ((part[numeric] - mean) / std).fillna(0)
        parts.append(pd.concat([nums, pd.get_dummies(part.drop(columns=numeric), dummy_na=True)], axis=1))
    return (parts[0].to_numpy(dtype=np.float32),
            parts[1].reindex(columns=parts[0].columns, fill_value=0).to_numpy(dtype=np.float32))


def with_categories(train: pd.DataFrame, val: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Text columns as pandas categories over the training fold's levels (unseen levels -> missing) for HGB's native
    categorical splits; a column with more levels than HGB's 255 bins allow goes in as its category codes."""
    train, val = train.copy(), val.copy()
    for c in train.columns.difference(train.select_dtypes(include="number").columns):
        levels = pd.Index(train[c].dropna().astype(str).unique())
        for part in (train, val):
            part[c] = pd.Categorical(part[c].astype(str).where(part[c].notna()), categories=levels)
            if len(levels) > 250:
                part[c] = part[c].cat.codes.replace(-1, np.nan).astype(float)
    return train, val


# ---- the methods: (train_x, train_y, val_x) -> validation predictions, y as numpy ------------------------------------

def d2l_linear(xt, yt, xv, seed: int):
    """d2l 4.10 (Kaggle house prices): one nn.Linear, Adam lr 5, no weight decay, 100 epochs of batch 64, MSE on the
    raw target; predictions clamped to >= 1 before the log, as d2l's log_rmse does. Adam moves each weight by about
    lr a step, so with few one-hot columns the net cannot reach a price scale of 1e5 in 100 epochs and underfits."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(xt), torch.tensor(yt, dtype=torch.float32).reshape(-1, 1)
    net, loss = nn.Linear(xt.shape[1], 1), nn.MSELoss()
    opt = torch.optim.Adam(net.parameters(), lr=5, weight_decay=0)
    for _ in range(100):
        for batch in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            loss(net(xt[batch]), yt[batch]).backward()
            opt.step()
    with torch.no_grad():
        return net(torch.from_numpy(xv)).clamp(min=1).squeeze(1).double().numpy()


def reference(method: str, task: str, x: pd.DataFrame, y: pd.Series, splits, seed: int, log: bool) -> list[float]:
    """Per-fold scores (log-RMSE, RMSE or accuracy) of one reference method."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV

    scores = []
    for train, val in splits:
        xt, xv, yt, yv = x.iloc[train], x.iloc[val], y.iloc[train].to_numpy(), y.iloc[val].to_numpy()
        if method == "hgb":
            xt, xv = with_categories(xt, xv)
            model = (HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=seed)
                     if task == "regression" else
                     HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=seed))
        else:
            xt, xv = one_hot_standardised(xt, xv)
            model = (RidgeCV(alphas=np.logspace(-3, 3, 13)) if task == "regression" else
                     LogisticRegression(max_iter=2000))
        if task == "classification":
            scores.append(float((model.fit(xt, yt.astype(str)).predict(xv) == yv.astype(str)).mean()))
            continue
        yt, yv = yt.astype(float), yv.astype(float)
        if method == "d2l":
            predicted = d2l_linear(xt, yt, xv, seed)  # d2l trains on the raw target whatever the metric
        else:  # Ridge and HGB fit log(target) when the metric is log-RMSE
            predicted = model.fit(xt, np.log(yt) if log else yt).predict(xv)
            predicted = np.exp(predicted) if log else predicted
        error = np.log(np.maximum(predicted, 1e-12)) - np.log(yv) if log else predicted - yv
        scores.append(float(np.sqrt(np.mean(error ** 2))))
    return scores


def run_dlkit(path: Path, target: str, k: int, seed: int, metric: str) -> tuple[list[float], str]:
    """Per-fold best-epoch validation scores of `dlkit.cross_validate` with the default recipe, and the key used:
    val_rmse stands in when dlkit did not log-transform the target (so it reported no val_rmsle)."""
    import dlkit

    out = Path(tempfile.mkdtemp(prefix="dlkit-bench-cv-")) / "cv"  # the CV folder must not exist yet
    try:
        result = dlkit.cross_validate(data=str(path), target=target, folds=k, seed=seed, out=str(out), quiet=True)
    except AttributeError as e:
        raise SystemExit(f"dlkit.cross_validate failed or is missing in this dlkit ({e}); "
                         "run the references alone with --only d2l,ridge,hgb") from e
    key = metric if metric in result["folds"][0] else "val_rmse"
    return [fold[key] for fold in result["folds"]], key


# ---- the comparison --------------------------------------------------------------------------------------------------

def compare(path: Path, target: str, k: int, seed: int, only: list[str]) -> float | None:
    """Print one dataset's table; return dlkit's seconds (None when it did not run)."""
    source = load(path, target)
    frame, task, target = source.frame, source.task, source.target
    splits = folds(source, k, seed)
    x, y = features(frame, target), frame[target]
    log = task == "regression" and bool((pd.to_numeric(y) > 0).all())  # log-RMSE needs a positive target
    metric = "accuracy" if task == "classification" else "log-RMSE" if log else "RMSE"
    names = {"d2l": "d2l linear net (Adam lr 5)", "ridge": "RidgeCV" if task == "regression" else "LogisticRegression",
             "hgb": "HistGradientBoosting"}
    rows, comparable = [], True
    # dlkit first, so it pays torch's first-use costs and gains nothing from the references warming caches
    if "dlkit" in only:
        import dlkit  # noqa: F401  (imports stay outside the timing, as for the references)

        dlkit_metric = "val_acc" if task == "classification" else "val_rmsle" if log else "val_rmse"
        start = time.perf_counter()
        scores, used = run_dlkit(path, target, k, seed, dlkit_metric)
        comparable = used == dlkit_metric
        rows.append(("dlkit (default recipe)" + ("" if comparable else f" [{used}, not {metric}]"), scores,
                     time.perf_counter() - start))
    for method in [m for m in ("d2l", "ridge", "hgb") if m in only]:
        if method == "d2l" and task == "classification":
            continue  # the d2l recipe is the house-price regression one
        start = time.perf_counter()
        rows.append((names[method], reference(method, task, x, y, splits, seed, log), time.perf_counter() - start))
    print(f"\n### {path.name}: {len(frame)} rows x {frame.shape[1]} columns, target {target!r} ({task}), "
          f"{k}-fold CV, seed {seed}")
    print(f"dlkit first, then the references, in this process, each with its own preprocessing inside each fold "
          f"(identifier-like columns dropped for all); metric: {metric} "
          f"({'higher' if task == 'classification' else 'lower'} is better), mean ± std over the {k} folds; "
          "seconds: all folds, preprocessing included.\n")
    print(f"| method | {metric} | seconds |\n|---|---|---|")
    for name, scores, seconds in rows:
        print(f"| {name} | {np.mean(scores):.4f} ± {np.std(scores, ddof=1):.4f} | {seconds:.1f} |")  # ddof 1 as dlkit
    refs = [r for r in rows if not r[0].startswith("dlkit")]
    ours = [r for r in rows if r[0].startswith("dlkit")]
    if ours and refs and comparable:  # no ratio across different metrics
        best = (max if task == "classification" else min)(refs, key=lambda r: np.mean(r[1]))
        print(f"\ndlkit / {best[0]} {metric}: {np.mean(ours[0][1]) / np.mean(best[1]):.2f}")
    return ours[0][2] if ours else None


def synthetic(seed: int) -> Path:
    """A seeded 3,000-row, 80-column house-like table: an Id, 35 numbers (some missing, a few outliers), 43 text
    columns of 3-10 levels (some missing), and a positive right-skewed price built from a few of them plus noise."""
    rng = np.random.default_rng(seed)
    n = 3000
    table = {"Id": np.arange(1, n + 1)}
    for j in range(35):
        values = rng.lognormal(3, 0.5, n) if j % 3 == 0 else rng.normal(50 + j, 10 + j, n)
        values[rng.random(n) < 0.05 * (j % 4 == 1)] = np.nan           # a quarter of the columns: 5% missing
        values[rng.choice(n, 3, replace=False)] *= 20 if j % 5 == 0 else 1  # a few outliers
        table[f"num{j}"] = np.round(values, 2)
    effects = {}
    for j in range(43):
        levels = rng.integers(3, 11)
        codes = rng.integers(0, levels, n)
        table[f"cat{j}"] = np.where(rng.random(n) < 0.02, None, np.array([f"c{j}_{lv}" for lv in range(levels)])[codes])
        effects[j] = rng.normal(0, 0.15, levels)[codes]
    frame = pd.DataFrame(table)
    signal = (0.4 * np.log(frame["num0"]) + 0.01 * frame["num1"].fillna(frame["num1"].median())
              + 0.008 * frame["num2"] - 0.005 * frame["num4"] + effects[0] + effects[1] + effects[2])
    frame["price"] = np.round(np.exp(11 + signal + rng.normal(0, 0.15, n)), -2)
    path = Path(tempfile.mkdtemp(prefix="dlkit-bench-tabular-")) / "synthetic-houses.csv"
    frame.to_csv(path, index=False)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a CSV/TSV/Parquet table (default: the two shared tables)")
    p.add_argument("--target", help="the column to predict (with --data)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--synthetic", action="store_true", help="a generated 3,000 x 80 house-like table (speed goal)")
    args = p.parse_args()
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    if unknown := set(only) - set(METHODS):
        p.error(f"--only: unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    if args.data and not args.target:
        p.error("--data needs --target")
    if args.synthetic:
        seconds = compare(synthetic(args.seed), "price", args.folds, args.seed, only)
        if seconds is not None:
            print(f"dlkit: {seconds:.1f} s for {args.folds}-fold CV of 3,000 rows x 80 columns; goal <= {GOAL_S:.0f} s "
                  f"({'met' if seconds <= GOAL_S else 'not met'})")
        return
    for path, target in [(args.data, args.target)] if args.data else TABLES:
        if not path.is_file():
            print(f"skipped: {path} not found")
            continue
        compare(path, target, args.folds, args.seed, only)


if __name__ == "__main__":
    main()
