"""Chinese class names are drawn as characters in every figure, without glyph warnings."""
import warnings

import numpy as np
import pytest
import torch

from dlkit.track import figures, fonts

pytest.importorskip("mplfonts", reason="the test extra installs mplfonts, which ships Noto Sans CJK")


def render(text: str) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig, _ = figures.subplots(figsize=(1, 0.5))
    fig.set_dpi(60)
    fig.text(0.1, 0.2, text, fontsize=20)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., 0].copy()


def test_chinese_class_names_draw_as_characters_without_glyph_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would raise here
        figures.save(figures.confusion_figure([[3, 1], [0, 4]], ["蚂蚁", "蜜蜂"], "验证"), tmp_path / "c.png")
        grid = figures.image_grid(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ["蚂蚁 (蚂蚁)", "蜜蜂 (蚂蚁)"])
        figures.save(grid, tmp_path / "grid.png")
        ant, bee = render("蚂"), render("蜂")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = render("\U000f0000")  # a private-use code point: no font has it, so it is the missing-glyph box
    assert fonts.cjk_family() is not None
    assert not np.array_equal(ant, bee)  # two different glyphs, not the same empty box twice
    assert not np.array_equal(ant, box) and (ant < 128).sum() > 20  # ink, and not the missing-glyph box
    assert fonts.readable(["蚂蚁", "bees"]) == ["蚂蚁", "bees"]


def test_without_a_cjk_font_names_become_class_numbers_with_one_note(monkeypatch, capsys):
    monkeypatch.setattr(fonts, "use_cjk_fallback", lambda: False)
    monkeypatch.setattr(fonts, "_warned", [])
    assert fonts.readable(["蚂蚁", "bees", "蜜蜂"]) == ["#0", "bees", "#2"]
    fonts.readable(["蚂蚁"])
    err = capsys.readouterr().err
    assert err.count("no font with Chinese characters") == 1 and "pip install mplfonts" in err
