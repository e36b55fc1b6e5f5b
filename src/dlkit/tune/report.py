"""The end of a sweep: a table of its trials (printed and trials.csv), best.yaml for `dlkit train --config`, and
Optuna's optimization-history and parameter-importance plots drawn with matplotlib (no Plotly)."""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..storage import atomic_write_text
from ..track.console import Console

# Fields best.yaml leaves out: where a run goes is the user's choice, and the folds are the sweep's, not the model's.
NOT_IN_BEST = ("out", "folds", "fold", "refit")


def report(plan, console: Console) -> dict[str, Any]:
    """Write trials.csv, best.yaml and the plots into the sweep folder, print the table; returns the summary."""
    from .study import load_study

    study, _ = load_study(plan)
    names = [p.name for p in plan.params]
    rows = trial_rows(study, names)
    atomic_write_text(plan.dir / "trials.csv", to_csv(rows, names))
    console.print(format_trials(rows, names, plan.monitor))
    counted = sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
    running = sum(r["state"] == "RUNNING" for r in rows)
    console.print(f"{counted} of {plan.trials} trials finished (complete or pruned)"
                  + (f"; {running} still running in another process" if running else ""))
    summary: dict[str, Any] = {"sweep_dir": str(plan.dir), "study_name": plan.study_name, "monitor": plan.monitor,
                               "params": {p.name: p.text for p in plan.params},
                               "direction": "maximize" if plan.maximize else "minimize", "trials": rows,
                               "finished": counted, "best": None, "files": {"trials_csv": str(plan.dir / "trials.csv")}}
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if complete:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "run_dir": best.user_attrs.get("run_dir")}
        summary["files"]["best_yaml"] = str(write_best(plan, best))
        console.print(f"best: trial {best.number}, {plan.monitor} {best.value:.4g} ({_values(best.params)})\n"
                      f"  settings: {plan.dir / 'best.yaml'}  (dlkit train --config {plan.dir / 'best.yaml'})\n"
                      f"  run:      {best.user_attrs.get('run_dir')}")
        summary["files"].update(write_plots(study, plan, console))
    else:
        console.print("note: no trial has completed yet (pruned and failed ones have no score): no best.yaml, no plots")
    return summary


def trial_rows(study, names: list[str]) -> list[dict[str, Any]]:
    """One row per trial, in order; trials that found the study full (never run) are left out."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "FAIL" and "run_dir" not in t.user_attrs and "failed" not in t.user_attrs:
            continue  # asked for a slot after the study was full: no run, not part of the sweep
        steps = sorted(t.intermediate_values)
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value,
                     "last_reported": t.intermediate_values[steps[-1]] if steps else None,
                     **{n: t.params.get(n) for n in names}, "epochs": t.user_attrs.get("epochs", len(steps) or None),
                     "seconds": t.user_attrs.get("seconds"), "note": _note(t),
                     "run_dir": t.user_attrs.get("run_dir")})
    return rows


def _note(t) -> str:
    if t.user_attrs.get("diverged"):
        return "loss diverged"
    if t.state.name == "PRUNED":
        return f"pruned after epoch {max(t.intermediate_values)}" if t.intermediate_values else "pruned"
    return t.user_attrs.get("failed", "") if t.state.name == "FAIL" else ""


def to_csv(rows: list[dict[str, Any]], names: list[str]) -> str:
    buffer = io.StringIO()
    columns = ["trial", "state", "value", *names, "epochs", "seconds", "note", "run_dir"]
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def format_trials(rows: list[dict[str, Any]], names: list[str], monitor: str) -> str:
    if not rows:
        return "no trials yet"
    header = ["trial", "state", monitor, *names, "epochs", "seconds", "note"]
    cells = [[str(r["trial"]), r["state"].lower(), _num(r["value"] if r["value"] is not None else r["last_reported"]),
              *[_num(r[n]) for n in names], _num(r["epochs"]), _num(r["seconds"]), r["note"]] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    return "\n".join("  ".join(v.rjust(w) if i not in (1, len(header) - 1) else v.ljust(w)
                               for i, (v, w) in enumerate(zip(row, widths))) for row in [header, *cells])


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _values(params: dict[str, Any]) -> str:
    from .trial import format_values

    return format_values(params)


def write_best(plan, best) -> Path:
    """best.yaml: the full config the best trial trained with (numbers as used, e.g. a resolved --lr auto), without
    `out`, so `dlkit train --config best.yaml` trains it again into a new folder."""
    run_dir = Path(best.user_attrs["run_dir"])
    source = run_dir / "config.yaml" if (run_dir / "config.yaml").is_file() else run_dir / "fold-1" / "config.yaml"
    config = yaml.safe_load(source.read_text()) or {}
    for key in NOT_IN_BEST:
        config.pop(key, None)
    head = (f"# best of sweep {plan.dir} (study {plan.study_name!r}): trial {best.number}, {plan.monitor} "
            f"{best.value:.6g}\n# searched: {_values(best.params)}\n# train it: dlkit train --config best.yaml\n")
    path = plan.dir / "best.yaml"
    atomic_write_text(path, head + yaml.safe_dump(config, sort_keys=False))
    return path


def write_plots(study, plan, console: Console) -> dict[str, str]:
    """optimization_history.png and param_importances.png, by Optuna's matplotlib backend (experimental there)."""
    import matplotlib
    import optuna

    from ..track import figures

    matplotlib.use("Agg")  # Optuna draws with pyplot: no screen needed
    import matplotlib.pyplot as pyplot
    from optuna.visualization import matplotlib as optuna_plots

    files = {}
    plots = {"history_png": ("optimization_history.png", optuna_plots.plot_optimization_history),
             "importance_png": ("param_importances.png", optuna_plots.plot_param_importances)}
    for key, (name, plot) in plots.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                axes = plot(study, target_name=plan.monitor)
            except (ValueError, RuntimeError) as e:  # e.g. importances need two finished trials that differ
                console.print(f"note: no {name}: {str(e).splitlines()[0]}")
                continue
        for w in caught:  # "too few trials to compute importances" and the like, as one line each
            if not issubclass(w.category, optuna.exceptions.ExperimentalWarning):
                console.print(f"note: {name}: {str(w.message).splitlines()[0]}")
        figure = axes.get_figure()
        figure.set_size_inches(7, 4.5)
        _made_readable(key, axes, study)
        figure.tight_layout()
        files[key] = str(figures.save(figure, plan.dir / name))
        pyplot.close(figure)  # pyplot keeps every figure until closed
    return files


FEW_TRIALS = 20  # importances below this many finished trials are a rough guide (a forest fitted to a few points)


def _made_readable(key: str, axes, study) -> None:
    """Whole trial numbers on the history's axis (matplotlib ticked 0.25, 0.5, ... between 3 trials), and on the importance
    plot how many finished trials it rests on, with a caveat when they are few (3 trials gave a confident-looking
    bar chart)."""
    from matplotlib.ticker import MaxNLocator

    if key == "history_png":
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    finished = sum(t.state.name == "COMPLETE" for t in study.trials)
    caveat = f"from {finished} finished trial{'' if finished == 1 else 's'}" + (
        ": too few to rank them reliably" if finished < FEW_TRIALS else "")
    axes.set_title(f"{axes.get_title(loc='left')}\n{caveat}", loc="left")  # under Optuna's own title
