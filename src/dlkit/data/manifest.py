"""CSV manifests: rows of `path,label[,split]`, paths relative to the CSV file."""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import UserError
from .folders import MISSING, FileList


def read_manifest(csv_path: Path, allow_outside_root: bool = False) -> dict[str, FileList]:
    """Split name ('all' when there is no split column) -> labelled files."""
    root = csv_path.parent.resolve()
    try:
        rows = list(csv.reader(csv_path.read_text(encoding="utf-8-sig").splitlines()))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{csv_path} is not a readable CSV manifest ({e}); expected rows of path,label") from None
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    splits: dict[str, FileList] = {}
    for line_no, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise UserError(f"{csv_path} row {line_no}: expected path,label (got {','.join(row)!r})")
        rel, label = row[0].strip(), row[1].strip()
        split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else "all"
        path, exists = _locate(root, rel, f"{csv_path} row {line_no}")
        if not allow_outside_root and (Path(rel).is_absolute() or not path.is_relative_to(root)):
            raise UserError(f"{csv_path} row {line_no}: path {rel[:80]!r} is outside the manifest's folder; move it inside")
        files = splits.setdefault({"valid": "val", "validation": "val"}.get(split, split), FileList())
        if exists:
            files.files.append(path)
            files.names.append(label)
        else:
            files.ignore(path, MISSING)
    unknown = set(splits) - {"all", "train", "val", "test"}
    if unknown:
        raise UserError(f"{csv_path}: unknown split name(s) {', '.join(sorted(unknown))}; use train, val or test")
    return splits


def _locate(root: Path, rel: str, where: str) -> tuple[Path, bool]:
    """The resolved path of a manifest entry and whether it is a file; an impossible name is the user's to fix."""
    try:
        path = (root / rel).resolve()
        return path, path.is_file()
    except (ValueError, OSError) as e:  # a NUL byte, a name longer than the filesystem allows
        raise UserError(f"{where}: {rel[:80]!r} is not a usable path ({type(e).__name__}: {str(e)[:60]})") from None
