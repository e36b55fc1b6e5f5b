"""Notebook display of dlkit's objects: a finished Run, a Predictor, predictions, evaluate, summarize, CV, sweeps.

Each function returns an HTML fragment (tables, and pictures as inline PNG) for the object's `_repr_html_`;
they are imported only when a notebook displays something.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from . import html as h

TIMES = (("setup", "setup_s"), ("training steps", "train_s"), ("validation", "val_s"),
         ("writing between epochs", "tracking_s"), ("writing at the end", "write_s"), ("total", "total_s"))


def _where(path: str | Path) -> str:
    """A link for a path under the notebook's folder (the notebook server serves those), else the path as text."""
    path = Path(path)
    try:
        relative = Path(os.path.relpath(path.resolve(), Path.cwd()))
    except ValueError:  # another drive
        return h.esc(path)
    return h.esc(path) if relative.parts[:1] == ("..",) else h.link(relative.as_posix(), str(path))


def _picture(png: Path, draw) -> str:
    """The run's own PNG when it has one (no drawing), else a figure drawn now."""
    if png.is_file():
        return h.img(png, png.stem)
    fig = draw()
    return h.figure_img(fig) if fig is not None else ""


# ---- a finished run ----------------------------------------------------------------------------------------------

def epochs_table(history: Sequence[dict[str, Any]], limit: int = 200) -> str:
    """The table of finished epochs (and --val-every validations): the metrics, lr, speed, time; best in bold."""
    skip = {"best", "within_epoch", "step", "skipped_batches"}
    keys = [k for k in (history[0] if history else {}) if k not in skip]
    keys += [k for r in history for k in r if k not in keys and k not in skip]
    header = [k.replace("images_per_s", "samples/s").replace("epoch_s", "seconds") for k in keys]
    best = [i for i, r in enumerate(history) if r.get("best")]
    return h.table(header, [[r.get(k) for k in keys] for r in history], highlight=best[-1:], limit=limit)


def run_html(run) -> str:
    s, history = run.summary, run.history
    monitor = s.get("monitor", "val_acc")
    best = s.get("best_value")
    facts = [("best", f"{monitor} {h.number(best)} at epoch {s.get('best_epoch')} of {s.get('epochs')}"
              if best is not None else None),
             ("stopped", (s.get("stopped") or {}).get("reason")),
             ("data", f"{s.get('data')} ({s.get('train_samples'):,} train, {s.get('val_samples'):,} val)"
              if s.get("train_samples") is not None else s.get("data")),
             ("model", f"{s.get('model')} ({s.get('parameters', 0):,} parameters)"),
             ("device", s.get("device")), ("speed", f"{h.number(s.get('images_per_s'))} per s (median epoch)"),
             ("time", ", ".join(f"{name} {s['timing'][key]:.2f}s" for name, key in TIMES if key in s.get("timing", {})))]
    links = [_where(run.dir)]
    if (run.dir / "report.html").is_file():
        links.append(_where(run.dir / "report.html"))
    curves = _picture(run.dir / "plots" / "curves.png", lambda: _curves(run) if history else None)
    return h.page(f"Run {run.dir.name}", h.pairs(facts), "<p>" + " | ".join(links) + "</p>", curves,
                  "<details><summary>epochs</summary>" + epochs_table(history) + "</details>")


def _curves(run):
    from . import figures

    return figures.curves_figure({run.dir.name: run.history})


# ---- a predictor and its predictions ------------------------------------------------------------------------------

def predictor_html(p) -> str:
    meta, spec = p.meta, p.spec
    task = (meta.get("task") or {}).get("name", "classification")
    classes = list(p.classes or ())
    shown = ", ".join(h.esc(c) for c in classes[:50]) + (f" ... ({len(classes) - 50} more)" if len(classes) > 50 else "")
    if p.modality == "table":
        spec_text = f"table: {len(getattr(spec, 'describe', lambda: [])())} columns in, target {spec.target}"
    else:
        spec_text = (f"{spec.channels}x{spec.image_size}x{spec.image_size} images, mean {list(spec.mean)}, "
                     f"std {list(spec.std)}")
    facts = [("model", meta.get("model")), ("task", task), ("input", spec_text), ("device", str(p.device)),
             ("best", f"{meta.get('monitor')} {h.number(meta.get('best_value'))} at epoch {meta.get('best_epoch')}"
              if meta.get("best_value") is not None else None),
             (f"classes ({len(classes)})", h.Raw(shown) if classes else None)]
    return h.page("Predictor", h.pairs(facts), f"<p>{_where(p.path)}</p>" if p.path else "")


def predictions_html(items: Sequence) -> str:
    """One row per image: its thumbnail as the model saw it, and a bar per class of the top k."""
    rows = []
    for topk in items:
        thumb = _thumbnail(topk.predictor, topk.item)
        bars = "<br>".join(h.bar(prob, label=f"{name} {prob:.3f}") for name, prob in topk)
        source = h.esc(topk.item) if isinstance(topk.item, (str, Path)) else h.esc(type(topk.item).__name__)
        rows.append(f"<tr><td>{thumb}</td><td>{bars}<br><span class='muted'>{source}</span></td></tr>")
    return h.page(f"Predictions ({len(items)})", f"<table>{''.join(rows)}</table>")


def _thumbnail(predictor, item) -> str:
    if predictor is None or item is None:
        return ""
    import io

    from PIL import Image

    image = predictor.to_uint8(item).permute(1, 2, 0).squeeze(-1).numpy()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return h.img(buffer.getvalue(), "input", width=max(48, min(128, 4 * image.shape[0])))


# ---- evaluate, summarize, cross-validation, sweeps ---------------------------------------------------------------

METRIC_KEYS = ("accuracy", "top5_accuracy", "loss", "rmse", "rmsle", "mae", "r2")


def eval_html(r: dict[str, Any]) -> str:
    facts = [("data", f"{r.get('data')} ({r.get('split')}, {r.get('samples')} samples)"),
             *[(k, r[k]) for k in METRIC_KEYS if k in r]]
    parts = [h.pairs(facts)]
    for note in r.get("notes") or []:
        parts.append(f"<p class='muted'>note: {h.esc(note)}</p>")
    if r.get("per_class"):
        parts.append(h.table(("class", "precision", "recall", "f1", "support"),
                             [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]] for c in r["per_class"]]))
    if r.get("confusion_matrix"):
        names = [c["class"] for c in r.get("per_class", [])]
        parts.append(_picture(Path(r.get("confusion_png") or "-"), lambda: _confusion(r["confusion_matrix"], names,
                                                                                      f"{r.get('split')}")))
    return h.page(f"Evaluation of {Path(str(r.get('checkpoint', ''))).parent.parent.name or 'the model'}", *parts)


def _confusion(matrix, names, title):
    from . import figures

    return figures.confusion_figure(matrix, names, title)


def summary_html(s: dict[str, Any]) -> str:
    from .summary_text import format_summary

    answers = []
    for line in format_summary(s).splitlines()[-4:]:  # the four answers, worded once, in format_summary
        name, _, value = line.partition(":")
        answers.append((name, value.strip()))
    layers = [[layer["name"] or "(model)", layer["type"], "x".join(map(str, layer["output"])) or "-",
               layer["params"], layer["macs"]] for layer in s["layers"]]
    return h.page(f"{s['model']} on {'x'.join(map(str, s['input']))} inputs", h.pairs(answers),
                  h.table(("layer", "type", "output", "params", "MACs"), layers, limit=500))


def cv_html(s: dict[str, Any]) -> str:
    keys = list(s["mean"])
    rows = [[f["fold"], *[f.get(k) for k in keys], f.get("best_epoch"), f.get("rows")] for f in s["folds"]]
    rows.append(["mean ± std", *[f"{h.number(s['mean'][k])} ± {h.number(s['std'][k])}" for k in keys], "", ""])
    parts = [h.table(("fold", *[k.removeprefix("val_") for k in keys], "best epoch", "val rows"), rows,
                     highlight=[len(rows) - 1]),
             _picture(Path(s["cv_dir"]) / "cv.png", lambda: None), f"<p>{_where(s['cv_dir'])}</p>"]
    if s.get("refit"):
        parts.append(f"<p>refit on all the data for {s['refit']['epochs']} epoch(s): {_where(s['refit']['run_dir'])}</p>")
    return h.page(f"{s['k']}-fold cross-validation of {s['model']} on {s['data']}", *parts)


def sweep_html(s: dict[str, Any]) -> str:
    names = list(s.get("params", {}))
    rows = [[t["trial"], t["state"], t["value"], *[t.get(n) for n in names], t.get("epochs"), t.get("seconds"),
             t.get("note")] for t in s["trials"]]
    best = s.get("best")
    marked = [i for i, t in enumerate(s["trials"]) if best and t["trial"] == best["number"]]
    parts = [h.table(("trial", "state", s["monitor"], *names, "epochs", "seconds", "note"), rows, highlight=marked)]
    if best:
        parts.insert(0, f"<p>best: trial {best['number']}, {h.esc(s['monitor'])} {h.number(best['value'])}; "
                        f"run {_where(best['run_dir']) if best.get('run_dir') else '-'}</p>")
    history = s.get("files", {}).get("history_png")
    if history and Path(history).is_file():
        parts.append(h.img(Path(history), "optimization history"))
    return h.page(f"Sweep of {len(s['trials'])} trials ({s['direction']} {s['monitor']})", *parts,
                  f"<p>{_where(s['sweep_dir'])}</p>")
