"""TablePredictor: a table model rebuilt from its checkpoint, preprocessing rows exactly as its saved TableSpec says.

`predict_frame` gives a DataFrame shaped like a Kaggle submission: the id column (named, or the one the spec
left out as an identifier) and the prediction, in the target's own units; for classes, the class and its
probability. A CV folder's fold models are averaged (an ensemble) when given the CV folder itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.table_reading import read_table
from ..data.tables import TableSpec
from ..errors import UserError
from ..tasks import mean_of_members


class TablePredictor:
    modality = "table"

    def __init__(self, models: Sequence[torch.nn.Module], specs: Sequence[TableSpec], meta: dict[str, Any],
                 device: torch.device, path: Path | None = None):
        self.models = [m.eval() for m in models]
        self.specs = list(specs)  # one per model: each CV fold fitted its own preprocessing on its own rows
        self.model, self.spec = self.models[0], self.specs[0]
        self.meta, self.device, self.path = meta, device, path
        self.task = self.spec.make_task()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.class_names

    def __repr__(self) -> str:
        return (f"TablePredictor({self.meta.get('model')}, {self.spec.task} of {self.spec.target!r}, "
                f"{len(self.models)} model(s), from {self.path})")

    def _repr_html_(self) -> str:
        from ..track.notebook import predictor_html

        return predictor_html(self)

    @torch.inference_mode()
    def outputs(self, rows: torch.Tensor, model: torch.nn.Module | None = None, batch_size: int = 4096) -> torch.Tensor:
        """One model's outputs (the first, unless given) for rows preprocessed by its own spec."""
        model = model or self.model
        parts = [mean_of_members(model(rows[s:s + batch_size].to(self.device))).float().cpu()
                 for s in range(0, len(rows), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.spec.outputs)

    def predicted(self, frame, where: str) -> dict[str, Any]:
        """The task's predictions for a DataFrame; several models (CV folds) are averaged in the target's own units
        (numbers) or as probabilities (classes)."""
        if len(self.models) == 1:
            return self.task.predictions(self.outputs(self.spec.transform(frame, where)))
        each = [spec.make_task().predictions(self.outputs(spec.transform(frame, where), model))
                for model, spec in zip(self.models, self.specs)]
        if self.spec.task == "regression":
            return {"prediction": np.mean([e["prediction"] for e in each], axis=0).tolist()}
        probs = torch.stack([e["probabilities"] for e in each]).mean(0)
        return self.task.predictions(probs.log())

    def read(self, table, where: str | None = None):
        """A DataFrame from a path or a DataFrame, with notes about columns the model does not use."""
        import pandas as pd

        notes: list[str] = []
        if isinstance(table, (str, Path)):
            where = where or str(table)
            frame, notes = read_table(Path(table))
        elif isinstance(table, pd.DataFrame):
            frame = table
        elif isinstance(table, dict) or (isinstance(table, list) and all(isinstance(r, dict) for r in table)):
            return rows_frame([table] if isinstance(table, dict) else table, self.spec, where or "the rows"), notes
        else:
            raise UserError("predict takes a table file, a pandas DataFrame, a dict or a list of dicts (rows)")
        used = {c["name"] for c in self.spec.columns} | {self.spec.target} | {s["name"] for s in self.spec.skipped}
        extra = [c for c in frame.columns if c not in used]
        if extra:
            notes.append(f"ignored column(s) the model was not trained on: {', '.join(map(str, extra[:8]))}"
                         + (" ..." if len(extra) > 8 else ""))
        return frame, notes

    def unseen_categories(self, frame) -> dict[str, int]:
        """Per categorical column, how many rows hold a value not seen in training (they use the unknown bucket)."""
        from ..data.tables import category_key

        counts = {}
        for c in self.spec.columns:
            if c["kind"] == "categorical" and c["name"] in frame.columns:
                known = set(c["vocab"])
                keys = frame[c["name"]].map(category_key)
                n = int((~keys.isin(known) & (keys != "\0missing")).sum())
                if n:
                    counts[c["name"]] = n
        return counts

    def predict_frame(self, table, id_column: str | None = None, where: str | None = None):
        """(DataFrame of predictions, notes). Columns: the id column, then the prediction (and probability)."""
        import pandas as pd

        frame, notes = self.read(table, where)
        where = where or "the table"
        unseen = self.unseen_categories(frame)
        if unseen:
            notes.append("unseen categories went to the unknown bucket: " +
                         ", ".join(f"{k} ({v} row(s))" for k, v in unseen.items()))
        predicted = self.predicted(frame, where)
        ids = self._id_column(frame, id_column)
        out = pd.DataFrame({ids: frame[ids].to_numpy()} if ids else {})
        name = self.spec.target
        out[name] = predicted["prediction"]
        if "probability" in predicted:
            out["probability"] = predicted["probability"]
        return out, notes

    def _id_column(self, frame, requested: str | None) -> str | None:
        if requested:
            if requested not in frame.columns:
                raise UserError(f"--id-column {requested!r} is not a column of the table; "
                                f"columns: {', '.join(map(str, list(frame.columns)[:12]))}")
            return requested
        for name in (self.spec.id_column, *(s["name"] for s in self.spec.skipped if s["kind"] == "id")):
            if name and name in frame.columns:
                return name
        return None

    def predict(self, table, id_column: str | None = None):
        """Predictions for a table file, DataFrame, dict or list of dicts, as a DataFrame."""
        return self.predict_frame(table, id_column)[0]

    def export_onnx(self, *args, **options):
        """Moved to dlkit.export_onnx(predictor, path, ...): the predictor no longer imports export (the layers
        contract), so this only says where it went."""
        raise UserError("predictor.export_onnx(...) moved: call dlkit.export_onnx(predictor, path, ...), or "
                        "`dlkit export RUN` from the shell")

    def explain(self, table, top: int = 3, id_column: str | None = None):
        """predict()'s DataFrame plus an `explanation` column: per row, the `top` input columns that moved the
        prediction most, signed ('x1 +0.31, island -0.12'). `.attrs["effects"]` holds every column's effect.
        Needs Captum (dlkit[explain]); see infer/explain_table.py."""
        return self.explain_frame(table, id_column, top=top)[0]

    def explain_frame(self, table, id_column: str | None = None, where: str | None = None, top: int = 3):
        """(predict_frame's DataFrame with the `explanation` column, notes); attrs: effects, strongest."""
        from .explain_table import column_effects, describe, effect_note, strongest

        frame, read_notes = self.read(table, where)
        where = where or (str(table) if isinstance(table, (str, Path)) else None)
        out, notes = self.predict_frame(frame, id_column, where)
        effects = column_effects(self, frame, where or "the table")
        pairs = strongest(effects, top)
        out["explanation"] = [describe(p) for p in pairs]
        out.attrs["effects"], out.attrs["strongest"] = effects, pairs
        return out, read_notes + [n for n in notes if n not in read_notes] + [effect_note(self)]



def rows_frame(rows: Sequence[dict], spec: TableSpec, where: str = "the rows"):
    """Rows as dicts (JSON, Python) -> a DataFrame with every column the model uses. A key left out of a row is a
    missing value, as an empty cell is in a CSV; a key the model does not know is an error, since a misspelt column
    would otherwise be predicted from its training fill without a word, and so is a row naming none of its columns."""
    import difflib

    import pandas as pd

    inputs = [c["name"] for c in spec.columns]
    known = {*inputs, spec.target, spec.id_column, *(s["name"] for s in spec.skipped)} - {None}
    for number, row in enumerate(rows, 1):
        unknown = [str(k) for k in row if k not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known, key=str), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{where}, row {number}: the model has no column {', '.join(map(repr, unknown[:5]))}; "
                            f"{hint}its columns: {', '.join(inputs[:12])}" + (" ..." if len(inputs) > 12 else ""))
        if inputs and not any(k in inputs for k in row):
            raise UserError(f"{where}, row {number} names none of the model's columns; give at least one of "
                            f"{', '.join(inputs[:12])}" + (" ..." if len(inputs) > 12 else ""))
    frame = pd.DataFrame(list(rows))
    for name in inputs:
        if name not in frame.columns:
            frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame


def load_table_predictor(metas: Sequence[dict[str, Any]], models: Sequence[torch.nn.Module], device: torch.device,
                         path: Path) -> TablePredictor:
    return TablePredictor(models, [TableSpec.from_dict(m["spec"]) for m in metas], metas[0], device, path)


def write_predictions(frame, out: Path, overwrite: bool = False) -> Path:
    """The predictions CSV, written atomically; an existing file is kept unless overwrite is asked."""
    from ..storage import atomic_write_text

    out = Path(out)
    refuse_existing(out, overwrite)
    atomic_write_text(out, frame.to_csv(index=False))
    return out


def refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
