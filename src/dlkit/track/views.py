"""Looking at a run from Python: run.plot(), run.show_batch(), run.confusion(), run.mistakes(k), run.report(), and
dlkit.show_data(). Each returns a Picture or a Page (track/results.py): it shows itself in a notebook and .save()s
from a script. They read what the run folder already holds (metrics, eval/val_metrics.json, report.html)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import figures
from . import html as h
from .results import Page, Picture


def plot(run) -> Picture:
    """The loss and metric curves, train dashed and validation solid (what plots/curves.png holds)."""
    if not run.history:
        raise UserError(f"{run.dir} has no finished epoch to plot yet; train it (or --resume it) for an epoch")
    return Picture(figures.curves_figure({run.dir.name: run.history}), f"curves of {run.dir.name}")


def _val_metrics(run) -> dict[str, Any]:
    path = run.dir / "eval" / "val_metrics.json"
    if not path.is_file():
        raise UserError(f"{path} is missing (the run was trained with --no-report, or did not finish); "
                        f"dlkit.evaluate({str(run.dir)!r}) measures the model again")
    return json.loads(path.read_text())


def confusion(run) -> Picture:
    """The best checkpoint's confusion matrix on the validation split (rows: true, columns: predicted)."""
    metrics = _val_metrics(run)
    if "confusion_matrix" not in metrics:
        raise UserError(f"{run.dir} predicts numbers, which have no confusion matrix; run.plot() shows its curves")
    names = [c["class"] for c in metrics["per_class"]]
    title = f"validation, best epoch {run.summary.get('best_epoch')}: accuracy {metrics['accuracy']:.4f}"
    return Picture(figures.confusion_figure(metrics["confusion_matrix"], names, title), f"confusion of {run.dir.name}")


def mistakes(run, k: int = 12) -> Page:
    """The k most confident wrong predictions of the best checkpoint on the validation split, with their images
    (the 12 worst are kept with the run: eval/val_metrics.json). Tables show the rows' line numbers instead."""
    metrics = _val_metrics(run)
    worst = metrics["mistakes"] if "mistakes" in metrics else metrics.get("worst_rows")
    if worst is None:
        raise UserError(f"{run.dir} keeps no mistakes (eval/val_metrics.json has none)")
    kept = worst[:k]
    note = f"<p class='muted'>{len(worst)} kept with the run; showing {len(kept)}</p>" if k > len(worst) else ""
    if not kept:
        body = "<p>no mistakes: every validation sample is predicted right</p>"
    elif "png" in kept[0]:
        cells = "".join(f"<td style='text-align:center'>{h.img(_decoded(m['png']), m['true'], width=96)}<br>"
                        f"true <b>{h.esc(m['true'])}</b><br>predicted {h.esc(m['predicted'])} {m['probability']:.2f}"
                        f"</td>" + ("</tr><tr>" if (i + 1) % 6 == 0 else "") for i, m in enumerate(kept))
        body = f"<table><tr>{cells}</tr></table>"
    elif "true" in kept[0]:
        body = h.table(("row", "true", "predicted", "probability"),
                       [[m["row"], m["true"], m["predicted"], m["probability"]] for m in kept])
    else:
        body = h.table(("row", "actual", "predicted", "error"),
                       [[m["row"], m["actual"], m["predicted"], m["error"]] for m in kept])
    return Page(h.page(f"Worst {len(kept)} mistakes of {run.dir.name} (validation)", note, body),
                f"mistakes of {run.dir.name}")


def _decoded(png_base64: str) -> bytes:
    import base64

    return base64.b64decode(png_base64)


def report(run, height: int = 700) -> Page:
    """The run's report.html inline, in a frame of its own, so its styles stay inside it."""
    path = run.dir / "report.html"
    if not path.is_file():
        raise UserError(f"{path} is missing (the run was trained with --no-report, or did not finish)")
    page = path.read_text(encoding="utf-8")
    frame = (f"<iframe srcdoc=\"{h.esc(page)}\" style='width:100%;height:{height}px;border:1px solid #ddd'>"
             "</iframe>")
    return Page(frame, f"report of {run.dir.name}", f"<report of {run.dir.name}: {path}>")


def show_batch(run, n: int = 16) -> Picture:
    """n training samples of the run's data, classes in turn, at the size and channels the model is trained on."""
    from .rundir import read_config

    cfg = read_config(run.dir)
    if run.summary.get("modality") == "table":
        raise UserError(f"{run.dir} trains on a table, which has no images; dlkit.show_data(data, target=...) "
                        "shows its columns")
    spec = _spec(run)
    grid, _, _ = _grid(cfg["data"], n, cfg.get("data_dir"), spec.get("image_size"), cfg.get("seed", 0),
                       spec.get("channels"), cfg.get("val_split", 0.2))
    return Picture(grid, f"a batch of {run.dir.name}")


def _spec(run) -> dict[str, Any]:
    from ..storage import load_tensors

    _, meta = load_tensors(run.checkpoint)
    return meta.get("spec", {})


def _grid(*args):
    from .datashow import data_grid

    return data_grid(*args)


def show_data(data: str, n: int = 32, *, target: str | None = None, data_dir: str | None = None,
              image_size: int | None = None, seed: int = 0, **table_options) -> Page:
    """A grid of n training samples (classes in turn) and the class counts; for a table (target=...) every column
    with its missing count, distinct values and what training does with it, and the target's distribution.
    The notebook form of `dlkit show-data`. Example: `dlkit.show_data("../shared/data/hymenoptera", n=16)`"""
    if target is not None:
        from .datashow import table_columns

        prepared, columns, fig = table_columns(data, target, data_args=table_options.pop("data_args", None),
                                               **table_options)
        notes = "".join(f"<p class='muted'>note: {h.esc(n)}</p>" for n in prepared.notes)
        body = h.table(("column", "dtype", "missing", "distinct", "what training does with it"), columns)
        return Page(h.page(prepared.headline, notes, body, h.figure_img(fig)), f"data {data}", prepared.headline)
    grid, counts, classes = _grid(data, n, data_dir, image_size, seed)
    total = sum(counts["train"].values()) or 1
    rows = [[c, counts["train"][c], counts["val"][c],
             h.Raw(h.bar(counts["train"][c] / total, 80, f"{counts['train'][c] / total:.1%}"))] for c in classes]
    table = h.table(("class", "train", "val", "share"), rows)
    text = f"<data {data}: {len(classes)} classes, {sum(counts['train'].values()):,} train, " \
           f"{sum(counts['val'].values()):,} val>"
    return Page(h.page(f"{data}: {len(classes)} classes", h.figure_img(grid, "samples"), table), f"data {data}", text)

