"""Results that display themselves: in a notebook as HTML tables and pictures, in a terminal as one short line.

The dict results (evaluate, summarize, cross_validate, sweep) stay plain dicts to every caller (json.dumps, keys,
equality); only their repr is shorter and a notebook gets `_repr_html_`. The HTML is built in track/notebook.py,
imported when a notebook asks for it, so nothing here imports IPython or matplotlib.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .html import esc


def _render(name: str, *args) -> str:
    from . import notebook

    return getattr(notebook, name)(*args)


def save_html(html_text: str, path: str | Path, title: str = "dlkit") -> Path:
    """A self-contained UTF-8 page holding the display (pictures inline), for opening without a notebook."""
    from ..storage import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title></head>"
                            f"<body>{html_text}</body></html>\n")
    return path


class _Shown(dict):
    """A dict result with a notebook display (`renderer` in track/notebook.py) and .save(path) as an HTML page."""

    renderer = ""

    def _repr_html_(self) -> str:
        return _render(self.renderer, self)

    def save(self, path: str | Path) -> Path:
        return save_html(self._repr_html_(), path, type(self).__name__)


class EvalResult(_Shown):
    """dlkit.evaluate's metrics: a dict (loss, accuracy, per_class, confusion_matrix, ...)."""

    renderer = "eval_html"

    def __repr__(self) -> str:
        headline = "  ".join(f"{k} {self[k]:.4f}" for k in ("accuracy", "top5_accuracy", "rmse", "r2", "loss")
                             if isinstance(self.get(k), float))
        return f"EvalResult({self.get('data')} {self.get('split')}, {self.get('samples')} samples: {headline})"


class ModelSummary(_Shown):
    """dlkit.summarize's layer table and totals: a dict (layers, params, FLOPs, memory); `.text` is the console's
    table and four answers, as `dlkit summary` prints them."""

    renderer = "summary_html"

    @property
    def text(self) -> str:
        from .summary_text import format_summary

        return format_summary(self)

    def __repr__(self) -> str:
        return (f"ModelSummary({self['model']} on {'x'.join(map(str, self['input']))}: {self['params']:,} parameters, "
                f"{len(self['layers'])} layers, {self['flops_forward_per_image'] / 1e6:,.1f} MFLOPs per input forward; "
                "print(s.text) for the table)")


class CVResult(_Shown):
    """dlkit.cross_validate's per-fold metrics with their mean and std: a dict."""

    renderer = "cv_html"

    def __repr__(self) -> str:
        spread = ", ".join(f"{k.removeprefix('val_')} {self['mean'][k]:.4g} ± {self['std'][k]:.2g}"
                           for k in list(self["mean"])[:3])
        return f"CVResult({self['k']} folds of {self['model']} on {self['data']}: {spread}; folder {self['cv_dir']})"


class SweepResult(_Shown):
    """dlkit.sweep's trials and best trial: a dict."""

    renderer = "sweep_html"

    def __repr__(self) -> str:
        best = self.get("best")
        text = f"best trial {best['number']} {self['monitor']} {best['value']:.4g}" if best else "no trial completed"
        return f"SweepResult({len(self['trials'])} trials, {text}; folder {self['sweep_dir']})"


class TopK(list):
    """One image's top-k [(class, probability), ...], a list as before; a notebook shows the image and bars."""

    def __init__(self, pairs, item: Any = None, predictor: Any = None):
        super().__init__(pairs)
        self.item, self.predictor = item, predictor

    def _repr_html_(self) -> str:
        return _render("predictions_html", [self])


class Predictions(list):
    """Several images' TopK lists; a notebook shows a thumbnail with top-k bars for each."""

    def _repr_html_(self) -> str:
        return _render("predictions_html", list(self))


def top_k(pairs, item: Any, predictor: Any) -> TopK:
    return TopK(pairs, item, predictor)


def predictions(lists, items, predictor: Any) -> Predictions:
    return Predictions(TopK(p, i, predictor) for p, i in zip(lists, items))


class Picture:
    """A figure that shows itself in a notebook (PNG) and saves from a script: run.plot(), run.confusion(), ..."""

    def __init__(self, fig, what: str):
        self.figure, self.what = fig, what

    def _repr_png_(self) -> bytes:
        from .html import png_bytes

        return png_bytes(self.figure, dpi=90)

    def save(self, path: str | Path) -> Path:
        from . import figures

        return figures.save(self.figure, Path(path))

    def __repr__(self) -> str:
        return f"<{self.what}: a picture; in a notebook it shows itself, .save('file.png') writes it>"


class Page:
    """HTML that shows itself in a notebook and saves as a page: run.mistakes(k), run.report(), dlkit.show_data()."""

    def __init__(self, html_text: str, what: str, text: str = ""):
        self.html, self.what, self.text = html_text, what, text

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path) -> Path:
        return save_html(self.html, path, self.what)

    def __repr__(self) -> str:
        return self.text or f"<{self.what}: in a notebook it shows itself, .save('file.html') writes it>"
