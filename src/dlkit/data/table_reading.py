"""Reading tables and deciding what each column is: CSV/TSV/Parquet through pandas (delimiter sniffed, Latin-1
tolerated, inf made missing), the target found, the task inferred, and every column's kind guessed (number, yes/no,
category, or left out: ids, constants, free text), with notes saying why.
"""
from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..device import available_memory
from ..errors import UserError, require

TABLE_SUFFIXES = {".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq"}
BOOLEAN_WORDS = {"yes": 1, "no": 0, "true": 1, "false": 0, "y": 1, "n": 0, "t": 1, "f": 0}
ID_NAME = re.compile(r"(^|[_\W])(id|pid|uuid|key|index|row|parcel)([_\W]|$)|id$", re.IGNORECASE)
MAX_VOCAB = 100          # most frequent categories kept per column; the rest share the unknown bucket


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
