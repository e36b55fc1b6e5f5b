"""report.html: one self-contained page per run (images embedded) with everything needed to judge it."""
from __future__ import annotations

import base64
import html
import platform
from pathlib import Path
from typing import Any

from ..storage import atomic_write_text

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}img.plot{max-width:100%;border:1px solid #eee}
.mistakes{display:flex;flex-wrap:wrap;gap:.8em}.mistakes figure{margin:0;font-size:.8em;text-align:center}
.kv td:first-child{text-align:left;color:#555}"""


def write_report(run_dir: Path, config: dict, history: list[dict], summary: dict, metrics: dict, device: str,
                 spec_lines: list[str] | None = None) -> Path:
    plots = run_dir / "plots"
    best = ", ".join(f"{k.removeprefix('val_')} <b>{v:.4g}</b>" for k, v in summary.get("best_metrics", {}).items())
    keys = [k for k in history[0] if k.startswith(("train_", "val_"))] if history else []
    sections = [
        _h(f"dlkit run {run_dir.name}"),
        f"<p>{_e(config['model'])} on {_e(config['data'])} ({_e(summary.get('task', 'classification'))}): "
        f"best validation {best} at epoch {summary['best_epoch']} of {summary['epochs']} "
        f"(chosen by {_e(summary.get('monitor', 'val_acc'))}).{_tta_line(summary.get('tta'))}</p>",
        _section("Curves", _plot(plots / "curves.png") + _plot(plots / "lr.png")),
        _section("Metrics per epoch", _table(["epoch", *[k.replace("_", " ") for k in keys], "lr", "samples/s"],
                 [[r["epoch"], *[_num(r.get(k)) for k in keys], f"{r['lr']:.2e}", f"{r['images_per_s']:,.0f}" if "images_per_s" in r else "(within epoch)"]
                  for r in history])),
    ]
    if summary.get("data_warnings"):
        sections.append(_section("Data left out", "<ul>" + "".join(f"<li>{_e(w)}</li>" for w in summary["data_warnings"])
                                 + "</ul>"))
    if spec_lines:
        sections.append(_section("Columns (what was inferred and done)", f"<pre>{_e(chr(10).join(spec_lines))}</pre>"))
    if "per_class" in metrics:
        sections += [
            _section("Per class (best checkpoint, validation)", _table(["class", "precision", "recall", "F1", "support"],
                     [[c["class"], f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]]
                      for c in metrics["per_class"]], left=1)),
            _section("Confusion matrix", _plot(plots / "confusion.png")),
            _section("Most confused pairs", _table(["true", "predicted as", "count"],
                     [[p["true"], p["predicted"], p["count"]] for p in metrics["most_confused"]], left=2)
                     if metrics["most_confused"] else "<p>No confusions.</p>"),
            _section("Worst mistakes (most confident wrong predictions)", _mistakes(metrics["mistakes"])),
        ]
    else:
        sections += [
            _section("Regression (best checkpoint, validation)", _kv({k: _num(metrics[k]) for k in
                                                                     ("rmse", "mae", "r2", "rmsle") if k in metrics})
                     + _plot(plots / "regression.png")),
            _section("Rows with the largest errors (row = line in the file)", _table(
                ["row", "actual", "predicted", "error"],
                [[r["row"], _num(r["actual"]), _num(r["predicted"]), _num(r["error"])] for r in metrics["worst_rows"]])),
        ]
    if "permutation_importance" in metrics:
        sections.append(_section("Which columns the model relies on (permutation importance, validation)",
                                 _plot(plots / "importance.png")))
    if (plots / "predictions.png").is_file():
        looked = _plot(plots / "predictions_explained.png") if (plots / "predictions_explained.png").is_file() else ""
        sections.append(_section("Sample predictions", _plot(plots / "predictions.png") + looked
                                 + (f"<p>{_e(metrics['explain_note'])}</p>" if metrics.get("explain_note") else "")))
    sections += [_section("Timing and environment", _kv(_environment(summary, device))),
                 _section("Config", _config_table(config))]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(run_dir.name)}</title>" \
           f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value) if value is not None else ""


def _tta_line(tta: dict | None) -> str:
    """The test-time augmentation's figure: what eval, predict, serve and export give for this checkpoint."""
    if not tta:
        return ""
    shown = ", ".join(f"{k.removeprefix('val_')} <b>{v:.4g}</b>" for k, v in tta.items() if k.startswith("val_"))
    return (f" With test-time augmentation ({_e(tta['mode'])}, recorded with the model and used by eval, predict, "
            f"serve and export): {shown}.")


def _environment(summary: dict, device: str) -> dict[str, Any]:
    from importlib.metadata import version

    import torch

    from .. import __version__

    t = summary.get("timing") or {}
    timing = (f"{t['total_s']:.1f} s from process start: setup and decoding {t['setup_s']:.1f} s, training steps "
              f"{t['train_s']:.1f} s, validation {t['val_s']:.1f} s, writing between epochs "
              f"{t.get('tracking_s', 0):.2f} s, writing at the end {t['write_s']:.1f} s (until the report)"
              if t else f"{summary['wall_s']:.1f} s")
    stopped = {"stopped early": f"{summary['stopped']['reason']} at step {summary['stopped']['step']}, "
                                f"{summary['stopped']['seconds_from_process_start']:.1f} s from process start"} \
        if summary.get("stopped") else {}
    phases = {"setup, phase by phase": ", ".join(f"{name} {seconds:.2f} s" for name, seconds in t["setup"].items())} \
        if t.get("setup") else {}
    return {"time until this report": timing, **phases, **stopped,  # the wall time, to the run's end: timing.total_s
            "training speed": f"{summary['images_per_s']:,.0f} samples/s (median of epochs)",
            "device": device, "train / val samples": f"{summary.get('train_samples')} / {summary.get('val_samples')}",
            "parameters": f"{summary.get('parameters', 0):,}", "dlkit": __version__, "torch": torch.__version__,
            "torchvision": version("torchvision"), "python": platform.python_version(),
            "platform": platform.platform(), "threads": torch.get_num_threads()}


def _e(value: Any) -> str:
    return html.escape(str(value))


def _h(text: str) -> str:
    return f"<h1>{_e(text)}</h1>"


def _section(title: str, body: str) -> str:
    return f"<h2>{_e(title)}</h2>{body}"


def _plot(path: Path) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<p><img class='plot' alt='{_e(path.stem)}' src='data:image/png;base64,{data}'></p>"


def _table(header: list[str], rows: list[list[Any]], left: int = 0) -> str:
    cls = lambda i: " class='l'" if i < left else ""  # noqa: E731  (the first `left` columns are text)
    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_e(v)}</td>" for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _kv(items: dict[str, Any]) -> str:
    return "<table class='kv'>" + "".join(f"<tr><td>{_e(k)}</td><td class='l'>{_e(v)}</td></tr>"
                                           for k, v in items.items()) + "</table>"


def _config_table(config: dict) -> str:
    """The options this run did not leave at dlkit's defaults (set by you, a config file or the data's recipe), not
    all ~70: an image run listed every table option too. config.yaml keeps them all."""
    from dataclasses import MISSING, fields

    from ..config import TrainConfig

    defaults = {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(TrainConfig)}
    chosen = {k: v for k, v in config.items() if k != "recipe_defaults" and (k not in defaults or v != defaults[k])}
    rest = len(config) - len(chosen) - ("recipe_defaults" in config)
    return _kv(chosen) + f"<p>The other {rest} options are at their defaults; config.yaml lists every option.</p>"


def _looked(mistake: dict) -> str:
    """Beside a mistake: where the network looked for the class it wrongly predicted (Grad-CAM), when computed."""
    if "looked_png" not in mistake:
        return ""
    return (f" <img alt='where it looked' title='where it looked for {_e(mistake['predicted'])}' "
            f"src='data:image/png;base64,{mistake['looked_png']}'>")


def _mistakes(mistakes: list[dict]) -> str:
    if not mistakes:
        return "<p>No mistakes on the validation split.</p>"
    if "png" not in mistakes[0]:  # table rows
        return _table(["row", "true", "predicted", "probability"],
                      [[m["row"], m["true"], m["predicted"], f"{m['probability']:.3f}"] for m in mistakes], left=0)
    cards = "".join(f"<figure><img alt='mistake' src='data:image/png;base64,{m['png']}'>{_looked(m)}<figcaption>"
                    f"true {_e(m['true'])}<br>predicted {_e(m['predicted'])} ({m['probability']:.2f})</figcaption>"
                    "</figure>" for m in mistakes)
    return f"<div class='mistakes'>{cards}</div>"
