"""Fonts for Chinese (and other CJK) class and column names in every matplotlib figure.

matplotlib's default DejaVu Sans has no CJK glyphs: a class named 蚂蚁 is drawn as empty boxes, with a warning per
character. `use_cjk_fallback` finds a CJK font (one the system has, or the one the optional `mplfonts` wheel ships)
and puts it after the default in the font list; matplotlib (>= 3.6) then takes each glyph from the first font that
has it. Where none exists, `readable` turns such names into their class number, and says once how to get a font.
"""
from __future__ import annotations

import sys
from functools import lru_cache

# families seen on Linux, macOS and Windows, in order of preference
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
                "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Arial Unicode MS")
INSTALL = "pip install mplfonts (or: apt install fonts-noto-cjk)"


@lru_cache(maxsize=1)
def cjk_family() -> str | None:
    """The name of a CJK-capable font family matplotlib can use, registering mplfonts' Noto Sans CJK if needed."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in installed:
            return family
    try:  # the mplfonts wheel carries Noto Sans CJK SC; register the file without importing its CLI
        from importlib.resources import files

        path = files("mplfonts") / "fonts" / "NotoSansCJKsc-Regular.otf"
        if path.is_file():
            font_manager.fontManager.addfont(str(path))
            return font_manager.FontProperties(fname=str(path)).get_name()
    except (ImportError, ModuleNotFoundError, OSError):
        pass
    return None


@lru_cache(maxsize=1)
def use_cjk_fallback() -> bool:
    """Put a CJK font after the default sans-serif one, once per process; False when there is none."""
    import matplotlib

    family = cjk_family()
    if family is None:
        return False
    # fallback needs the families named: the generic "sans-serif" resolves to one font only
    default = next((f for f in matplotlib.rcParams["font.family"] if f not in ("sans-serif", family)), None) \
        or matplotlib.rcParams["font.sans-serif"][0]
    matplotlib.rcParams["font.family"] = [default, family]
    matplotlib.rcParams["axes.unicode_minus"] = False  # CJK fonts often lack the minus glyph
    return True


def needs_cjk(text: str) -> bool:
    return any(ord(ch) >= 0x2E80 for ch in str(text))  # CJK radicals and beyond: not in DejaVu Sans


_warned: list[bool] = []


def readable(names, numbered: bool = True) -> list[str]:
    """Names as they can be drawn here: unchanged when a CJK font exists (or none is needed), else a class number
    (with a one-time note saying how to get a font), never boxes."""
    names = [str(n) for n in names]
    if not any(needs_cjk(n) for n in names) or use_cjk_fallback():
        return names
    if not _warned:
        _warned.append(True)
        print(f"note: no font with Chinese characters found; figures show those names as numbers ({INSTALL})",
              file=sys.stderr)
    return [f"#{i}" if needs_cjk(n) and numbered else ("?" if needs_cjk(n) else n) for i, n in enumerate(names)]
