"""Looking back at runs: `dlkit runs` (a table of past runs) and `dlkit compare` (curves overlaid, final metrics)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from .rundir import read_config, read_metrics

COLUMNS = ("name", "data", "model", "epochs", "best_val_acc", "wall_s", "images_per_s")


def run_row(run_dir: Path) -> dict[str, Any]:
    """One run's headline numbers, from summary.json when the run finished, else from metrics.jsonl."""
    config, history = read_config(run_dir), read_metrics(run_dir)
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    best = max((r["val_acc"] for r in history if "val_acc" in r), default=None)
    monitor, value = summary.get("monitor"), summary.get("best_value")
    best_text = f"{monitor.removeprefix('val_')} {value:.4g}" if monitor and value is not None else \
        (f"acc {best:.4f}" if best is not None else "")
    return {"name": run_dir.name, "data": Path(str(config.get("data", "?"))).name or config.get("data"),
            "model": config.get("model", "?"), "epochs": len([r for r in history if not r.get("within_epoch")]),
            "best_val_acc": summary.get("best_val_acc", best), "best": best_text, "wall_s": summary.get("wall_s"),
            "images_per_s": summary.get("images_per_s"), "finished": bool(summary), "dir": str(run_dir)}


def list_runs(runs_dir: str | Path, sort: str = "name") -> list[dict[str, Any]]:
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{root} does not exist; pass the folder holding your runs (default: runs)")
    if sort not in COLUMNS:
        raise UserError(f"--sort must be one of {', '.join(COLUMNS)} (got {sort!r})")
    rows = [run_row(p) for p in sorted(root.iterdir()) if (p / "config.yaml").is_file()]
    present = [r for r in rows if r[sort] is not None]
    present.sort(key=lambda r: r[sort], reverse=sort in ("best_val_acc", "images_per_s", "epochs"))  # best first
    return present + [r for r in rows if r[sort] is None]


def format_runs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs found"
    cells = [[r["name"], str(r["data"]), r["model"], str(r["epochs"]), _num(r["best_val_acc"], ".4f"), r["best"],
              _num(r["wall_s"], ".1f"), _num(r["images_per_s"], ",.0f") + ("" if r["finished"] else "  (unfinished)")]
             for r in rows]
    header = ["run", "data", "model", "epochs", "best val acc", "best (monitored)", "wall s", "samples/s"]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    line = lambda row: "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([line(header)] + [line(c) for c in cells])


def compare_runs(run_dirs: list[str | Path], out: str | Path) -> tuple[Path, str]:
    """One PNG with every run's curves overlaid, and a table of their final metrics."""
    from . import figures

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
