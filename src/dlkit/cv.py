"""K-fold cross-validation: K normal runs inside one CV folder, a table of their metrics, and an optional refit.

Each fold is a full `dlkit train` run (folds=K, fold=i in its config), so `dlkit runs`, `eval` and `predict`
work on every fold. The folds are seeded and stratified for classes. `refit` then trains once more on all the
data with the same settings for the folds' median best epoch count: the d2l house-price recipe's last step.
`dlkit predict CV_FOLDER` uses the refit model, or averages the fold models when there is none.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, TextIO

from .config import make_config
from .errors import require


def cross_validate(config: str | Path | None = None, *, folds: int = 5, refit: bool = False, out: str | None = None,
                   quiet: bool = False, log: TextIO | None = None, **overrides: Any) -> dict[str, Any]:
    """Train `folds` runs, fold i validating on the i-th part; returns the per-fold metrics and their mean and std.

    Keyword arguments are TrainConfig fields (data, target, model, epochs, ...), as for dlkit.train.
    Example: dlkit.cross_validate(data="houses.csv", target="price", folds=5, refit=True)
    """
    from .api import train
    from .device import process_seconds
    from .track.console import Console
    from .track.rundir import new_run_dir

    require(folds >= 2, f"--folds must be at least 2 (got {folds})")
    base = make_config({**overrides, "folds": folds, "fold": 0}, config)  # validates everything before any work
    console = Console(quiet=quiet, stream=log)
    cv_dir = new_run_dir(out, base.runs_dir, base.data, f"cv{folds}-{base.model}")
    results = []
    for fold in range(folds):
        console.print(f"== fold {fold + 1} of {folds} ==")
        run = train(config, quiet=quiet, log=log, **{**overrides, "folds": folds, "fold": fold,
                                                      "out": str(cv_dir / f"fold-{fold + 1}")})
        s = run.summary
        results.append({"fold": fold + 1, "run_dir": str(run.dir), "best_epoch": s["best_epoch"],
                        "rows": s["val_samples"], **s["best_metrics"]})
    summary = _summarize(results, base, folds, cv_dir)
    if refit:
        epochs = max(1, round(statistics.median(r["best_epoch"] for r in results)))
        console.print(f"== refit on all the data for {epochs} epoch(s) (the folds' median best epoch) ==")
        run = train(config, quiet=quiet, log=log, **{**overrides, "refit": True, "epochs": epochs,
                                                      "out": str(cv_dir / "refit")})
        summary["refit"] = {"run_dir": str(run.dir), "epochs": epochs, "checkpoint": str(run.checkpoint)}
    summary["wall_s"] = round(process_seconds(), 2)  # as a run's: process start to the end (folds, refit, files)
    _write(cv_dir, summary)
    from .track.results import CVResult

    return CVResult(summary)  # a dict that shows itself in a notebook


def _summarize(results: list[dict[str, Any]], cfg, folds: int, cv_dir: Path) -> dict[str, Any]:
    keys = [k for k in results[0] if k.startswith("val_")]
    mean = {k: statistics.fmean(r[k] for r in results) for k in keys}
    std = {k: statistics.stdev(r[k] for r in results) if len(results) > 1 else 0.0 for k in keys}
    return {"cv_dir": str(cv_dir), "data": cfg.data, "target": cfg.target, "model": cfg.model, "folds": results,
            "k": folds, "seed": cfg.seed, "mean": mean, "std": std}


def _write(cv_dir: Path, summary: dict[str, Any]) -> None:
    from .storage import atomic_write_text
    from .track import figures

    atomic_write_text(cv_dir / "cv.json", json.dumps(summary, indent=1))
    atomic_write_text(cv_dir / "cv.md", cv_markdown(summary))
    keys = [k for k in summary["mean"] if k != "val_loss"]
    fig, axes = figures.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [r[key] for r in summary["folds"]]
        mean, std = figures.number(summary["mean"][key]), figures.number(summary["std"][key])
        ax.bar([str(r["fold"]) for r in summary["folds"]], values, color="C0", label="fold")
        ax.axhline(summary["mean"][key], color="black", lw=1, label=f"mean {mean}")
        ax.set(title=f"{key.removeprefix('val_')}: {mean} ± {std}", xlabel="fold")
        figures.readable_ticks(ax.yaxis)
        ax.legend(fontsize=8, ncol=2, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # off the bars
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    figures.save(fig, cv_dir / "cv.png")


def format_cv(summary: dict[str, Any]) -> str:
    keys = list(summary["mean"])
    header = ["fold", *[k.removeprefix("val_") for k in keys], "best epoch"]
    rows = [[str(r["fold"]), *[_fmt(r[k]) for k in keys], str(r["best_epoch"])] for r in summary["folds"]]
    rows.append(["mean ± std", *[f"{_fmt(summary['mean'][k])} ± {_fmt(summary['std'][k])}" for k in keys], ""])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in [header] + rows]
    return "\n".join(lines)


def cv_markdown(summary: dict[str, Any]) -> str:
    """cv.md: a title, then the per-fold metrics and their mean ± std as a Markdown table."""
    keys = list(summary["mean"])
    header = ["fold", *[k.removeprefix("val_") for k in keys], "best epoch", "rows"]
    rows = [[str(r["fold"]), *[_fmt(r[k]) for k in keys], str(r["best_epoch"]), str(r.get("rows", ""))]
            for r in summary["folds"]]
    spread = [f"{_fmt(summary['mean'][k])} ± {_fmt(summary['std'][k])}" for k in keys]
    rows.append(["**mean ± std**", *spread, "", ""])
    target = f", target `{summary['target']}`" if summary.get("target") else ""
    lines = [f"# {summary['k']}-fold cross-validation of `{summary['model']}` on `{Path(str(summary['data'])).name}`"
             f"{target}", "", "Validation metrics of each fold's best epoch.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    from .track.figures import number  # one number format for the tables and the figures

    return number(value)
