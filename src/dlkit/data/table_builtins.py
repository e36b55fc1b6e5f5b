"""The built-in tables (scikit-learn's small sets, d2l's synthetic linear data), and whether a --data names a table."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require
from ..registry import Registry

from .table_reading import TABLE_SUFFIXES


# ---- built-in tables -----------------------------------------------------------------------------------------------

TABLE_BUILTINS: Registry = Registry("table dataset")


def _sklearn_table(loader: str, target_names: bool):
    def load(args: dict[str, Any]):
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        frame = bunch.frame.copy()
        if target_names:
            frame["target"] = [str(bunch.target_names[i]) for i in bunch.target]
        return frame, "target"
    return load


TABLE_BUILTINS.register("diabetes", help="scikit-learn's diabetes progression (442 rows, 10 features): regression; offline")(
    _sklearn_table("load_diabetes", False))
TABLE_BUILTINS.register("breast-cancer", help="scikit-learn's breast cancer Wisconsin (569 rows, 30 features, 2 classes); offline")(
    _sklearn_table("load_breast_cancer", True))
TABLE_BUILTINS.register("wine", help="scikit-learn's wine recognition (178 rows, 13 features, 3 classes); offline")(
    _sklearn_table("load_wine", True))
TABLE_BUILTINS.register("iris", help="scikit-learn's iris flowers (150 rows, 4 features, 3 classes); offline")(
    _sklearn_table("load_iris", True))


SYNTHETIC_DEFAULTS = {"w": [2.0, -3.4], "b": 4.2, "noise": 0.01, "n": 1000}


@TABLE_BUILTINS.register("synthetic-linear", help="d2l's linear-regression data y = Xw + b + noise "
                                                  "(--data-arg w=2,-3.4 b=4.2 noise=0.01 n=1000)")
def synthetic_linear(args: dict[str, Any]):
    import pandas as pd

    unknown = set(args) - set(SYNTHETIC_DEFAULTS) - {"seed"}
    require(not unknown, f"synthetic-linear takes --data-arg w, b, noise, n and seed (got {', '.join(sorted(unknown))})")
    true_w, b = synthetic_truth(args)
    w = np.asarray(true_w, dtype=np.float64)
    noise, n = float(args.get("noise", SYNTHETIC_DEFAULTS["noise"])), int(args.get("n", SYNTHETIC_DEFAULTS["n"]))
    rng = np.random.default_rng(int(args.get("seed", 0)))
    x = rng.normal(0, 1, (n, len(w)))
    y = x @ w + b + rng.normal(0, noise, n)
    frame = pd.DataFrame(x, columns=[f"x{i + 1}" for i in range(len(w))])
    frame["y"] = y
    return frame, "y"


def synthetic_truth(args: dict[str, Any]) -> tuple[list[float], float]:
    """The true w and b of synthetic-linear: --data-arg values or the book's defaults (one place for both uses)."""
    w = args.get("w", SYNTHETIC_DEFAULTS["w"])
    return [float(v) for v in ([w] if isinstance(w, (int, float)) else w)], float(args.get("b", SYNTHETIC_DEFAULTS["b"]))


def is_table(data: str) -> bool:
    """Whether --data names a table: a built-in table, a .tsv/.parquet file, or a .csv that is not an image manifest."""
    if data in TABLE_BUILTINS:
        return True
    path = Path(str(data)).expanduser()
    if not path.is_file() or path.suffix.lower() not in TABLE_SUFFIXES:
        return False
    if path.suffix.lower() != ".csv":
        return True
    return not _looks_like_manifest(path)


def _looks_like_manifest(path: Path) -> bool:
    """A CSV of path,label rows: a header path,label, or first cells naming image files."""
    from .images import IMAGE_EXTENSIONS

    try:
        with path.open(encoding="utf-8-sig", errors="replace") as f:
            rows = [row for _, row in zip(range(6), csv.reader(f)) if row]
    except (OSError, csv.Error):
        return False
    if not rows:
        return False
    if [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        return True
    body = rows[1:] or rows
    return all(Path(r[0].strip()).suffix.lower() in IMAGE_EXTENSIONS for r in body)
