"""Tables: read CSV/TSV/Parquet with pandas, infer what every column is, and fit the preprocessing on training rows.

`read_table` turns a file into a DataFrame (delimiter sniffed, Latin-1 tolerated, inf made missing), `infer_columns`
decides each column's kind, and `TableSpec.fit` learns fill values, scales and vocabularies from the training rows
only. The spec is plain JSON saved inside every checkpoint, so predict rebuilds the exact input from a new file.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import UserError, require
from ..tasks import Classification, Regression, TargetScale
from .table_reading import MAX_VOCAB, ColumnChoice, _booleans

CLIP = 3.0               # robust scaling: smooth clipping x / sqrt(1 + (x / CLIP)^2), as RealMLP does


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


def category_key(value) -> str:
    """How a category value is keyed: its text, with whole floats written as integers (3.0 -> '3')."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "\0missing"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def category_keys(values):
    """category_key of every value, computed once per distinct value (a dict lookup per row, not a Python call)."""
    import pandas as pd

    present = values.notna()
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):  # pandas' str dtype
        return values.str.strip().astype(object).where(present, "\0missing")
    keys = pd.Series("\0missing", index=values.index, dtype=object)
    if present.any():
        uniques = pd.unique(values[present])
        keys[present] = values[present].map({u: category_key(u) for u in uniques}).astype(object)
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
