"""Looking back at runs: `dlkit runs` (a table of past runs) and `dlkit compare` (curves overlaid, final metrics)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from .rundir import read_config, read_metrics

COLUMNS = ("name", "data", "model", "epochs", "best_val_acc", "wall_s", "train_s", "images_per_s")
# Files of a folder whose runs were trained inside one bigger command (`dlkit cv`, `dlkit sweep`): its runs share that
# command's process, so none has a wall time of its own.
GROUP_MARKERS = {"cv.json": "cv", "study.journal": "sweep", "trials.csv": "sweep"}


def run_row(run_dir: Path, shared_process: bool = False) -> dict[str, Any]:
    """One run's headline numbers, from summary.json when the run finished, else from metrics.jsonl.

    wall_s is the one wall time dlkit reports (process start to the run's end, as the closing line says); a fold or
    refit of `dlkit cv` shares its process with the folds before it, so it has none of its own (the CV's row has it).
    train_s is the time in training steps alone."""
    config, history = read_config(run_dir), read_metrics(run_dir)
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    timing = summary.get("timing") or {}
    best = max((r["val_acc"] for r in history if "val_acc" in r), default=None)
    monitor, value = summary.get("monitor"), summary.get("best_value")
    best_text = f"{monitor.removeprefix('val_')} {value:.4g}" if monitor and value is not None else \
        (f"acc {best:.4f}" if best is not None else "")
    return {"name": run_dir.name, "kind": "run", "data": _data_name(config), "model": config.get("model", "?"),
            "epochs": len([r for r in history if not r.get("within_epoch")]),
            "best_val_acc": summary.get("best_val_acc", best), "best": best_text, "monitor": monitor,
            "wall_s": None if shared_process else timing.get("total_s"), "train_s": timing.get("train_s"),
            "images_per_s": summary.get("images_per_s"), "finished": bool(summary), "dir": str(run_dir)}


def group_rows(folder: Path) -> list[dict[str, Any]]:
    """A folder of runs (a `dlkit cv` folder, a sweep, your own): a row for it, from cv.json when there is one, then
    a row for each run inside, named folder/run."""
    shared = _group_kind(folder) is not None
    members = [run_row(p, shared_process=shared) for p in sorted(folder.iterdir()) if (p / "config.yaml").is_file()]
    for m in members:
        m["name"], m["kind"] = f"{folder.name}/{m['name']}", "member"
    cv_file = folder / "cv.json"
    cv = json.loads(cv_file.read_text()) if cv_file.is_file() else {}
    monitor = next((m["monitor"] for m in members if m["monitor"]), None) or "val_acc"
    mean, std = cv.get("mean", {}), cv.get("std", {})
    best = f"{monitor.removeprefix('val_')} {mean[monitor]:.4g} ± {std.get(monitor, 0):.2g} (mean of {cv['k']})" \
        if monitor in mean else ""
    first = members[0] if members else {"data": "?", "model": "?"}
    head = {"name": folder.name, "kind": _group_kind(folder) or "folder",
            "data": Path(str(cv.get("data") or "")).name or first["data"], "model": cv.get("model") or first["model"],
            "epochs": None, "best_val_acc": mean.get("val_acc"), "best": best, "monitor": monitor,
            "wall_s": cv.get("wall_s"), "train_s": _sum(m["train_s"] for m in members),
            "images_per_s": None, "finished": bool(cv) or all(m["finished"] for m in members), "dir": str(folder)}
    return [head, *members]


def list_runs(runs_dir: str | Path, sort: str = "name") -> list[dict[str, Any]]:
    """The runs in a folder, sorted; a folder of runs inside it (CV, sweep) is one row with its runs beneath."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{root} does not exist; pass the folder holding your runs (default: runs)")
    if sort not in COLUMNS:
        raise UserError(f"--sort must be one of {', '.join(COLUMNS)} (got {sort!r})")
    groups, shared = [], _group_kind(root) is not None  # `dlkit runs CV_DIR`: its folds share one process
    for p in sorted(root.iterdir()):
        if (p / "config.yaml").is_file():
            groups.append([run_row(p, shared_process=shared)])
        elif p.is_dir() and ((p / "cv.json").is_file() or any((c / "config.yaml").is_file() for c in p.iterdir())):
            groups.append(group_rows(p))
    present = [g for g in groups if g[0][sort] is not None]
    present.sort(key=lambda g: g[0][sort], reverse=sort in ("best_val_acc", "images_per_s", "epochs"))  # best first
    return [row for g in present + [g for g in groups if g[0][sort] is None] for row in g]


def _group_kind(folder: Path) -> str | None:
    return next((kind for name, kind in GROUP_MARKERS.items() if (folder / name).is_file()), None)


def _data_name(config: dict[str, Any]):
    return Path(str(config.get("data", "?"))).name or config.get("data")


def _sum(values) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known), 2) if known else None


def format_runs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs found"
    cells = [[("  " if r["kind"] == "member" else "") + r["name"], str(r["data"]), r["model"], _num(r["epochs"], "d"),
              _num(r["best_val_acc"], ".4f"), r["best"], _num(r["wall_s"], ".1f"), _num(r["train_s"], ".1f"),
              _num(r["images_per_s"], ",.0f") + ("" if r["finished"] else "  (unfinished)")] for r in rows]
    header = ["run", "data", "model", "epochs", "best val acc", "best (monitored)", "wall s", "train s", "samples/s"]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    line = lambda row: "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([line(header)] + [line(c) for c in cells] + [
        "wall s: process start to the run's end (a CV's folds share its process); train s: the training steps"])


def compare_runs(run_dirs: list[str | Path], out: str | Path, overwrite: bool = False) -> tuple[Path, str]:
    """One PNG with every run's curves overlaid, and a table of their final metrics; an existing `out` is kept
    unless `overwrite`, as every file dlkit writes."""
    from . import figures

    if Path(out).exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not (d / "metrics.jsonl").is_file():
            raise UserError(f"{d} is not a run folder with metrics (no metrics.jsonl); pass folders made by `dlkit train`")
    histories = {d.name: read_metrics(d) for d in dirs}
    path = figures.save(figures.curves_figure(histories), Path(out))
    rows = []
    for d, h in zip(dirs, histories.values()):
        last, row = h[-1], run_row(d)
        rows.append([d.name, row["model"], str(len(h)), f"{last['train_loss']:.4f}", f"{last['val_loss']:.4f}",
                     _num(last.get("val_acc"), ".4f"), row["best"]])
    header = ["run", "model", "epochs", "train loss", "val loss", "val acc", "best (monitored)"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    table = "\n".join("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                      for r in [header] + rows)
    return path, table


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)
