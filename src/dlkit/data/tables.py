"""Tables: read CSV/TSV/Parquet with pandas, infer what every column is, and fit the preprocessing on training rows.

`read_table` turns a file into a DataFrame (delimiter sniffed, Latin-1 tolerated, inf made missing), `infer_columns`
decides each column's kind, and `TableSpec.fit` learns fill values, scales and vocabularies from the training rows
only. The spec is plain JSON saved inside every checkpoint, so predict rebuilds the exact input from a new file.
"""
from __future__ import annotations

import csv
import difflib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..device import available_memory
from ..errors import UserError, require
from ..registry import Registry
from ..tasks import Classification, Regression, TargetScale

TABLE_SUFFIXES = {".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq"}
BOOLEAN_WORDS = {"yes": 1, "no": 0, "true": 1, "false": 0, "y": 1, "n": 0, "t": 1, "f": 0}
ID_NAME = re.compile(r"(^|[_\W])(id|pid|uuid|key|index|row|parcel)([_\W]|$)|id$", re.IGNORECASE)
MAX_VOCAB = 100          # most frequent categories kept per column; the rest share the unknown bucket
CLIP = 3.0               # robust scaling: smooth clipping x / sqrt(1 + (x / CLIP)^2), as RealMLP does


# ---- reading -------------------------------------------------------------------------------------------------------

def read_table(path: Path):
    """(DataFrame, notes) of a CSV/TSV/Parquet file, or a one-line UserError naming what is wrong with it."""
    import pandas as pd

    path = Path(path)
    require(path.is_file(), f"{path} does not exist; pass a .csv, .tsv or .parquet file")
    size = path.stat().st_size
    require(size > 0, f"{path} is empty; a table needs a header row and at least one data row")
    _check_fits_in_memory(path, size)
    notes: list[str] = []
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises many kinds for a damaged file
            raise UserError(f"{path} is not a readable Parquet file ({str(e).splitlines()[0][:100]})") from None
    else:
        frame = _read_text_table(path, notes)
    require(len(frame.columns) > 0, f"{path} has no columns; a table needs a header row")
    require(len(frame) > 0, f"{path} has a header but no data rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    numeric = frame.select_dtypes(include="number")
    infinite = [c for c in numeric.columns if np.isinf(numeric[c].to_numpy(dtype=float, na_value=np.nan)).any()]
    if infinite:
        frame[infinite] = frame[infinite].replace([np.inf, -np.inf], np.nan)
        notes.append(f"infinite values treated as missing in column(s) {', '.join(infinite[:5])}")
    return frame, notes


def _read_text_table(path: Path, notes: list[str]):
    import pandas as pd

    raw = path.open("rb").read(1 << 16)
    encoding = "utf-8-sig"
    try:
        sample = raw.decode(encoding)
    except UnicodeDecodeError as e:
        if e.start < len(raw) - 4:  # not just a character cut at the end of the sample
            encoding = "latin-1"
            sample = raw.decode(encoding)
            notes.append(f"{path.name} is not UTF-8; read it as Latin-1")
        else:
            sample = raw[:e.start].decode(encoding)
    require(sample.strip() != "", f"{path} is empty; a table needs a header row and at least one data row")
    sep = _sniff_separator(sample, path)
    header = next(csv.reader([sample.splitlines()[0]], delimiter=sep), [])
    seen: set[str] = set()
    duplicates = sorted({h.strip() for h in header if h.strip() in seen or seen.add(h.strip())})
    if duplicates:
        notes.append(f"duplicate column name(s) {', '.join(duplicates[:5])}: the later copies are renamed "
                     f"{duplicates[0]}.1 and so on")
    if sep != ",":
        notes.append(f"separator {sep!r} detected")
    try:
        return pd.read_csv(path, sep=sep, encoding=encoding, low_memory=False, skipinitialspace=True)
    except UnicodeDecodeError:
        notes.append(f"{path.name} is not UTF-8; read it as Latin-1")
        return pd.read_csv(path, sep=sep, encoding="latin-1", low_memory=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty; a table needs a header row and at least one data row") from None
    except pd.errors.ParserError as e:
        raise UserError(f"{path} is not a well-formed table ({str(e).strip().splitlines()[-1][:120]})") from None


def _sniff_separator(sample: str, path: Path) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    lines = "\n".join(sample.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(lines, delimiters=",;\t|").delimiter
    except csv.Error:
        counts = {sep: sample.splitlines()[0].count(sep) for sep in ",;\t|"}
        return max(counts, key=counts.get) if max(counts.values()) else ","


def _check_fits_in_memory(path: Path, size: int) -> None:
    # pandas needs a few times the file's size while parsing text; Parquet expands on decompression too
    need = size * (6 if path.suffix.lower() in (".parquet", ".pq") else 3)
    free = available_memory()
    if need > free:
        raise UserError(f"{path} is {size / 2**30:.1f} GiB, too large to load here ({free / 2**30:.1f} GiB of memory "
                        "available); sample its rows into a smaller file, or use a machine with more memory")


def table_columns_hint(frame) -> str:
    names = list(map(str, frame.columns))
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")


def find_target(frame, target: str | None, where: str) -> str:
    """The target column's name, or a one-line error suggesting close names."""
    names = list(map(str, frame.columns))
    if target is None:
        raise UserError(f"{where} is a table: name the column to predict with --target (columns: {table_columns_hint(frame)})")
    if target in names:
        return target
    lower = {n.lower(): n for n in names}
    if target.lower() in lower:
        return lower[target.lower()]
    close = difflib.get_close_matches(target, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"columns: {table_columns_hint(frame)}"
    raise UserError(f"--target {target!r} is not a column of {where}; {hint}")


# ---- what every column is ------------------------------------------------------------------------------------------

@dataclass
class ColumnChoice:
    name: str
    kind: str       # numeric | boolean | categorical | id | constant | text | dropped
    why: str = ""


def infer_task(values, requested: str = "auto") -> str:
    """regression for numbers with many distinct values (or any non-whole number), else classification."""
    import pandas as pd

    numeric = pd.to_numeric(values, errors="coerce")
    is_numeric = numeric.notna().all()
    if requested == "regression":
        if not is_numeric:
            bad = values[numeric.isna()].iloc[0]
            raise UserError(f"--task regression needs a numeric target, but it holds text such as {str(bad)[:30]!r}; "
                            "use --task classification")
        return "regression"
    if requested == "classification":
        return "classification"
    if not is_numeric or pd.api.types.is_bool_dtype(values):
        return "classification"
    whole = bool((numeric == numeric.round()).all())
    return "regression" if (not whole or numeric.nunique() > 20) else "classification"


def infer_columns(frame, target: str, drop: Sequence[str] = (), categorical: Sequence[str] = (),
                  numeric: Sequence[str] = (), id_column: str | None = None) -> list[ColumnChoice]:
    """One ColumnChoice per column but the target; the --drop/--categorical/--numeric/--id-column overrides win."""
    names = list(map(str, frame.columns))
    for option, given in (("--drop", drop), ("--categorical", categorical), ("--numeric", numeric),
                          ("--id-column", [id_column] if id_column else [])):
        for name in given:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
                raise UserError(f"{option} {name!r} is not a column" + (f"; did you mean {', '.join(close)}?" if close else
                                                                         f" (columns: {table_columns_hint(frame)})"))
    choices = []
    for name in names:
        if name == target:
            continue
        if name in drop:
            choices.append(ColumnChoice(name, "dropped", "--drop"))
        elif name == id_column:
            choices.append(ColumnChoice(name, "id", "--id-column"))
        elif name in categorical:
            choices.append(ColumnChoice(name, "categorical", "--categorical"))
        elif name in numeric:
            choices.append(ColumnChoice(name, "numeric", "--numeric"))
        else:
            choices.append(_guess_kind(frame[name]))
    return choices


def _guess_kind(values) -> ColumnChoice:
    import pandas as pd

    name = str(values.name)
    present = values.dropna()
    distinct = present.nunique()
    if distinct <= 1:
        return ColumnChoice(name, "constant", "one value" if distinct else "all missing")
    if pd.api.types.is_bool_dtype(values) or (distinct == 2 and _booleans(present) is not None):
        return ColumnChoice(name, "boolean")
    if pd.api.types.is_numeric_dtype(values):
        whole = pd.api.types.is_integer_dtype(values) or bool((present == present.round()).all())
        if whole and distinct == len(values) and (ID_NAME.search(name) or _consecutive(present)):
            return ColumnChoice(name, "id", "a distinct whole number on every row")
        return ColumnChoice(name, "numeric")
    text = present.astype(str)
    as_numbers = pd.to_numeric(text, errors="coerce")
    if as_numbers.notna().mean() >= 0.9:
        bad = text[as_numbers.isna()]
        return ColumnChoice(name, "categorical", f"mixed numbers and text (e.g. {bad.iloc[0][:20]!r}); "
                                                 f"--numeric {name} reads the text as missing")
    if distinct == len(values):
        if text.str.contains(r"\s").mean() > 0.5:
            return ColumnChoice(name, "text", "free text, a distinct value on every row")
        return ColumnChoice(name, "id", "a distinct value on every row")
    if distinct > max(MAX_VOCAB, len(values) // 2) and text.str.len().mean() > 20:
        return ColumnChoice(name, "text", "free text")
    return ColumnChoice(name, "categorical")


def _consecutive(values) -> bool:
    v = np.sort(values.to_numpy(dtype=float))
    return len(v) > 1 and bool(np.all(np.diff(v) == 1))


def _booleans(values) -> dict | None:
    """{value: 0/1} when a column's two values are yes/no, true/false, y/n or t/f, in any case."""
    words = {str(v).strip().lower() for v in values.unique()}
    if words <= set(BOOLEAN_WORDS) and len({BOOLEAN_WORDS[w] for w in words}) == 2:
        return {w: BOOLEAN_WORDS[w] for w in words}
    return None


# ---- the spec: fitted on training rows, applied anywhere --------------------------------------------------------

@dataclass
class TableSpec:
    """Everything needed to turn rows of a table into model input, and model output back into the target.

    columns: one dict per used column: name, kind and its fitted values (numeric: fill, center, scale,
    missing_indicator; boolean: fill; categorical: vocab, whose index 0 is the missing/unseen bucket).
    """

    columns: list[dict[str, Any]]
    target: str
    task: str                                 # classification | regression
    class_names: tuple[str, ...] = ()
    target_scale: dict[str, Any] = field(default_factory=dict)
    scaling: str = "robust"                   # numeric inputs: robust (median/IQR + smooth clip) or standard
    encoding: str = "onehot"                  # categorical inputs: onehot or embedding
    skipped: list[dict[str, str]] = field(default_factory=list)   # columns left out, and why
    id_column: str | None = None
    modality: str = "table"

    # -- fitting --

    @classmethod
    def fit(cls, frame, target: str, task: str, choices: list[ColumnChoice], class_names: Sequence[str] = (),
            target_transform: str = "auto", scaling: str = "robust", encoding: str = "onehot",
            notes: list[str] | None = None) -> "TableSpec":
        import pandas as pd

        notes = notes if notes is not None else []
        columns, skipped, id_column = [], [], None
        for choice in choices:
            values = frame[choice.name]
            if choice.kind == "numeric":
                columns.append(_fit_numeric(choice.name, pd.to_numeric(values, errors="coerce")))
                columns[-1]["coerce"] = choice.why == "--numeric"  # text in it is read as missing, here and in predict
            elif choice.kind == "boolean":
                columns.append(_fit_boolean(choice.name, values))
            elif choice.kind == "categorical":
                columns.append(_fit_categorical(choice.name, values))
            else:
                skipped.append({"name": choice.name, "kind": choice.kind, "why": choice.why})
                if choice.kind == "id" and id_column is None:
                    id_column = choice.name
        require(columns, f"no usable input columns left besides the target {target!r}; "
                         f"left out: {', '.join(s['name'] for s in skipped) or 'none'}")
        scale = {}
        if task == "regression":
            scale = _fit_target(pd.to_numeric(frame[target], errors="coerce"), target_transform, target, notes).to_dict()
        return cls(columns, target, task, tuple(class_names), scale, scaling, encoding, skipped, id_column)

    # -- shape of the model's input --

    def _widths(self, c: dict[str, Any]) -> tuple[int, int, int]:
        """How many input columns a column fills in each block: (continuous, 0/1 flags, embedding codes)."""
        if c["kind"] == "numeric":
            return 1, int(c["missing_indicator"]), 0
        if c["kind"] == "boolean":
            return 0, 1, 0
        return (0, len(c["vocab"]), 0) if self.encoding == "onehot" else (0, 0, 1)

    @property
    def numeric_width(self) -> int:
        """Columns of the input tensor holding numbers: continuous values first, then 0/1 flags and one-hots."""
        return sum(w[0] + w[1] for w in map(self._widths, self.columns))

    @property
    def continuous_width(self) -> int:
        """The leading input columns that are continuous (scaled numbers): the ones numeric embeddings expand."""
        return sum(self._widths(c)[0] for c in self.columns)

    @property
    def cardinalities(self) -> list[int]:
        """Vocabulary sizes of the categorical columns fed to embeddings (their codes come last)."""
        return [len(c["vocab"]) for c in self.columns if self._widths(c)[2]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def outputs(self) -> int:
        return len(self.class_names) if self.task == "classification" else 1

    def model_inputs(self) -> dict[str, Any]:
        """What a table model's builder needs: the input layout and the output count."""
        return {"in_features": self.numeric_width, "continuous": self.continuous_width,
                "cardinalities": self.cardinalities, "num_outputs": self.outputs}

    def feature_groups(self) -> list[tuple[str, list[int]]]:
        """(source column, indices of its input-tensor columns), for permutation importance."""
        widths = [self._widths(c) for c in self.columns]
        starts = [0, sum(w[0] for w in widths), sum(w[0] + w[1] for w in widths)]
        groups: dict[str, list[int]] = {}
        for c, w in zip(self.columns, widths):
            for block in range(3):
                groups.setdefault(c["name"], []).extend(range(starts[block], starts[block] + w[block]))
                starts[block] += w[block]
        return list(groups.items())

    def make_task(self):
        if self.task == "classification":
            return Classification(self.class_names)
        return Regression(TargetScale.from_dict(self.target_scale))

    # -- applying --

    def transform(self, frame, where: str = "the table") -> torch.Tensor:
        """float32 rows x input width. Missing columns are an error; unseen categories go to the unknown bucket."""
        import pandas as pd

        missing = [c["name"] for c in self.columns if c["name"] not in frame.columns]
        if missing:
            raise UserError(f"{where} has no column {', '.join(repr(m) for m in missing[:5])}, which the model was "
                            "trained on; add it (empty values are fine)")
        blocks: tuple[list, list, list] = ([], [], [])   # continuous, flags, codes: the order of _widths
        for c in self.columns:
            values = frame[c["name"]]
            if c["kind"] == "numeric":
                parsed = pd.to_numeric(values, errors="coerce")
                if pd.api.types.is_numeric_dtype(values):
                    parsed = parsed.replace([np.inf, -np.inf], np.nan)
                elif not c.get("coerce"):
                    _report_bad_numbers(values, parsed, c["name"], where)
                x = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
                absent = np.isnan(x)
                center, scale = self.scale_of(c)
                z = (np.where(absent, c["fill"], x) - center) / scale
                if self.scaling == "robust":
                    z = z / np.sqrt(1 + (z / CLIP) ** 2)
                blocks[0].append(z)
                if c["missing_indicator"]:
                    blocks[1].append(absent.astype(np.float64))
            elif c["kind"] == "boolean":
                mapping = c["mapping"]
                x = values.map(lambda v: mapping.get(str(v).strip().lower(), np.nan) if pd.notna(v) else np.nan)
                x = x.to_numpy(dtype=np.float64, na_value=np.nan)
                blocks[1].append(np.where(np.isnan(x), c["fill"], x))
            else:
                index = {v: i for i, v in enumerate(c["vocab"])}
                code = category_keys(values).map(index).fillna(0).to_numpy(dtype=np.int64)
                if self.encoding == "onehot":
                    blocks[1].extend(np.eye(len(c["vocab"]))[code].T)
                else:
                    blocks[2].append(code.astype(np.float64))
        columns = blocks[0] + blocks[1] + blocks[2]
        if not columns:
            return torch.zeros(len(frame), 0)
        return torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))

    def scale_of(self, c: dict[str, Any]) -> tuple[float, float]:
        """(center, scale) of a numeric column: median and IQR-based spread (robust) or mean and std (standard)."""
        return (c["center"], c["scale"]) if self.scaling == "robust" else (c["mean"], c["std"])

    def encode_target(self, values, where: str = "the table") -> torch.Tensor:
        import pandas as pd

        if self.task == "classification":
            index = {name: i for i, name in enumerate(self.class_names)}
            labels = category_keys(values).tolist()
            unknown = sorted({v for v in labels if v not in index})
            if unknown:
                raise UserError(f"{where}: class(es) {', '.join(unknown[:5])} in column {self.target!r} were not in "
                                f"training; the model knows {', '.join(self.class_names[:10])}")
            return torch.tensor([index[v] for v in labels], dtype=torch.int64)
        numbers = pd.to_numeric(values, errors="coerce")
        _report_bad_numbers(values, numbers, self.target, where)
        y = torch.from_numpy(numbers.to_numpy(dtype=np.float64, na_value=np.nan).copy())
        scale = TargetScale.from_dict(self.target_scale)
        if scale.transform == "log" and bool((y <= 0).any()):
            row = int((y <= 0).nonzero()[0, 0])
            raise UserError(f"{where} row {row + 2}: target {self.target!r} is {float(y[row]):g}, but the model was "
                            "trained on its logarithm and needs positive values")
        return scale.encode(y)

    # -- describing --

    def describe(self) -> list[str]:
        """One line per column: what was inferred and what is done with it."""
        lines = [f"  {self.target:<20} target ({self.task}" + (
            f", {len(self.class_names)} classes)" if self.task == "classification" else
            f", {TargetScale.from_dict(self.target_scale).transform} scale)")]
        for c in self.columns:
            if c["kind"] == "numeric":
                how = f"numeric, {self.scaling} scaling, missing -> median {c['fill']:.4g}" + (
                    " + missing indicator" if c["missing_indicator"] else "")
            elif c["kind"] == "boolean":
                how = "yes/no -> 1/0"
            else:
                how = f"categorical, {len(c['vocab']) - 1} values + unknown bucket, {self.encoding}"
            lines.append(f"  {c['name']:<20} {how}")
        for s in self.skipped:
            lines.append(f"  {s['name']:<20} left out: {s['kind']}" + (f" ({s['why']})" if s["why"] else ""))
        return lines

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TableSpec":
        d = dict(d)
        d["class_names"] = tuple(d.get("class_names", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _category(value) -> str:
    """How a category value is keyed: its text, with whole floats written as integers (3.0 -> '3')."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "\0missing"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def category_keys(values):
    """_category of every value, computed once per distinct value (a dict lookup per row, not a Python call)."""
    import pandas as pd

    present = values.notna()
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):  # pandas' str dtype
        return values.str.strip().astype(object).where(present, "\0missing")
    keys = pd.Series("\0missing", index=values.index, dtype=object)
    if present.any():
        uniques = pd.unique(values[present])
        keys[present] = values[present].map({u: _category(u) for u in uniques}).astype(object)
    return keys


def _report_bad_numbers(values, parsed, column: str, where: str) -> None:
    """A value that is present but not a number is reported by its row number (header is row 1)."""
    import pandas as pd

    bad = parsed.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if not pd.api.types.is_numeric_dtype(values) and bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"{where} row {position + 2}: column {column!r} holds {str(values.iloc[position])[:30]!r}, "
                        "not a number; fix or empty that cell")


def _fit_numeric(name: str, values) -> dict[str, Any]:
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    present = x[~np.isnan(x)]
    median = float(np.median(present)) if len(present) else 0.0
    filled = np.where(np.isnan(x), median, x)
    q25, q75 = np.percentile(filled, [25, 75])
    spread = float(q75 - q25) / 1.349 or float(filled.std()) or 1.0  # IQR of a normal is 1.349 sd
    return {"name": name, "kind": "numeric", "fill": median, "center": median, "scale": spread,
            "mean": float(filled.mean()), "std": float(filled.std()) or 1.0,
            "missing_indicator": bool(np.isnan(x).any())}


def _fit_boolean(name: str, values) -> dict[str, Any]:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        mapping = {"true": 1, "false": 0}
    else:
        mapping = _booleans(values.dropna()) or {}
    x = values.map(lambda v: mapping.get(str(v).strip().lower(), np.nan) if pd.notna(v) else np.nan)
    fill = float(np.nanmean(x.to_numpy(dtype=np.float64, na_value=np.nan))) if x.notna().any() else 0.0
    return {"name": name, "kind": "boolean", "mapping": mapping, "fill": fill}


def _fit_categorical(name: str, values) -> dict[str, Any]:
    counts = category_keys(values).value_counts()
    counts = counts[counts.index != "\0missing"]
    vocab = ["\0unknown"] + sorted(counts.index[:MAX_VOCAB].tolist())
    return {"name": name, "kind": "categorical", "vocab": vocab}


def _fit_target(y, transform: str, name: str, notes: list[str]) -> TargetScale:
    x = y.to_numpy(dtype=np.float64, na_value=np.nan)
    x = x[~np.isnan(x)]
    if transform == "auto":
        skew = float(((x - x.mean()) ** 3).mean() / (x.std() ** 3 + 1e-12))
        transform = "log" if x.min() > 0 and skew > 0.75 else "standardize"
        if transform == "log":
            notes.append(f"target {name!r} is positive and right-skewed (skewness {skew:.2f}): the model learns its "
                         "logarithm (--target-transform to change); predictions come back in its own units")
    if transform == "log":
        require(x.min() > 0, f"--target-transform log needs a positive target, but {name!r} goes down to {x.min():g}; "
                             "use standardize")
        x = np.log(x)
    if transform == "none":
        return TargetScale("none", 0.0, 1.0)
    return TargetScale(transform, float(x.mean()), float(x.std()) or 1.0)


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

