"""HTML pieces for notebook display: escaped text, tables, inline PNG pictures. No JavaScript, no IPython here.

Everything that comes from the user or the data (class names, paths, column names, config values) goes through
`esc`, so a class named `<b>x</b>` shows as those characters and `蜜蜂` as itself.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

# Scoped to .dlkit so a notebook's own styles are neither changed nor needed.
STYLE = ("<style>.dlkit{font-family:sans-serif;font-size:13px}.dlkit table{border-collapse:collapse;margin:4px 0}"
         ".dlkit th,.dlkit td{border:1px solid #ddd;padding:2px 8px}.dlkit td.n{text-align:right;"
         "font-variant-numeric:tabular-nums}.dlkit th{background:#f4f4f4}.dlkit .muted{color:#777}"
         ".dlkit .best{font-weight:bold}.dlkit img{max-width:100%}</style>")


class Raw(str):
    """HTML made by dlkit itself (a bar, a picture), put into a table cell as it is."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    """A figure as a table shows it: 4 decimals below 10 (accuracies, losses), one above, none past 10,000,
    thousands separated, small rates in e-notation, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return esc(value)
    size = abs(value)
    if size >= 10_000:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:,.1f}"
    return f"{value:.2e}" if 0 < size < 0.01 else f"{value:.{digits}f}"  # learning rates: 2.00e-03


def strip_tags(text: str) -> str:
    """The text of some HTML made here (a progress line), for a text/plain fallback."""
    import re

    return html.unescape(re.sub(r"<[^>]*>", "", text)).strip()


def cell(value: Any, tag: str = "td", css: str = "") -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    classes = " ".join(c for c in (css, "n" if numeric else "") if c)
    text = number(value) if numeric or value is None else esc(value)
    return f"<{tag}{f' class={chr(34)}{classes}{chr(34)}' if classes else ''}>{text}</{tag}>"


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], highlight: Iterable[int] = (),
          limit: int = 200) -> str:
    """An HTML table; rows in `highlight` (indices) are bold; at most `limit` rows, with a line saying how many more."""
    marked = set(highlight)
    rows = list(rows)
    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(v, css="best" if i in marked else "") for v in row) + "</tr>"
                   for i, row in enumerate(rows[:limit]))
    more = f"<p class='muted'>... and {len(rows) - limit:,} more rows</p>" if len(rows) > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of name / value."""
    return table(("", ""), [(k, v) for k, v in items if v is not None]).replace("<thead><tr><th></th><th></th></tr>"
                                                                              "</thead>", "")


def png_bytes(fig, dpi: int = 80) -> bytes:
    """A matplotlib Figure as PNG bytes (drawn by Agg, whatever backend the notebook chose)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def img(png: bytes | Path | None, alt: str = "", width: int | None = None) -> str:
    """An <img> holding the PNG itself (base64), so the notebook file carries the picture; '' for no picture."""
    if png is None:
        return ""
    data = png.read_bytes() if isinstance(png, Path) else png
    size = f" width='{width}'" if width else ""
    return f"<img alt='{esc(alt)}'{size} src='data:image/png;base64,{base64.b64encode(data).decode()}'/>"


def figure_img(fig, alt: str = "", dpi: int = 80) -> str:
    return img(png_bytes(fig, dpi), alt)


def bar(fraction: float, width: int = 120, label: str = "") -> str:
    """A horizontal bar (a probability, a share) drawn with two inline-block spans: no JavaScript, no widget."""
    fraction = min(1.0, max(0.0, float(fraction)))
    return (f"<span style='display:inline-block;width:{width}px;background:#eee;vertical-align:middle'>"
            f"<span style='display:block;width:{fraction * width:.0f}px;height:10px;background:#4a90d9'></span>"
            f"</span> {esc(label)}")


def page(title: str, *parts: str) -> str:
    """One display block: a heading line and its parts, inside the scoped style."""
    return f"{STYLE}<div class='dlkit'><b>{esc(title)}</b>{''.join(parts)}</div>"


def link(path: str | Path, text: str | None = None) -> str:
    """A link to a file or folder as the notebook server serves it (relative paths work from the notebook)."""
    return f"<a href='{esc(path)}' target='_blank'>{esc(text or path)}</a>"
