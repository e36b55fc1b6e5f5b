"""The figures read as a person reads them: the text drawn on each confusion cell contrasts with that cell's colour,
and the colour scale starts at 0."""
import pytest

from dlkit.track import figures


def contrast(a, b) -> float:
    """WCAG contrast ratio of two colours (1 = the same, 21 = black on white)."""
    from matplotlib.colors import to_rgba

    light, dark = sorted((figures.luminance(to_rgba(a)), figures.luminance(to_rgba(b))), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def drawn_cells(fig):
    """(count, text colour, the cell's colour under it) for every number drawn on the matrix."""
    ax = fig.axes[0]
    image = ax.images[0]
    cells = []
    for t in ax.texts:
        column, row = t.get_position()
        cells.append((int(t.get_text()), t.get_color(), image.cmap(image.norm(image.get_array()[row, column]))))
    return cells


@pytest.mark.parametrize("matrix", [
    [[30, 29], [28, 30]],                    # hymenoptera: no zero cell, every count near the peak
    [[50, 0, 3], [1, 44, 9], [0, 25, 60]],   # the usual: a bright diagonal, a few mistakes
    [[0, 0], [0, 0]]])                       # nothing at all
def test_every_count_on_the_confusion_matrix_contrasts_with_its_own_cell(matrix):
    fig = figures.confusion_figure(matrix, ["ants", "bees", "wasps"][:len(matrix)], "validation")
    cells = drawn_cells(fig)
    assert sorted(v for v, _, _ in cells) == sorted(v for row in matrix for v in row)
    for count, text, cell in cells:
        assert contrast(text, cell) >= 4.5, (count, text, cell)  # WCAG AA for normal text
    assert fig.axes[0].images[0].norm.vmin == 0


def test_counts_near_the_peak_are_shaded_dark_when_the_scale_starts_at_zero():
    image = figures.confusion_figure([[30, 29], [28, 30]], ["ants", "bees"], "validation").axes[0].images[0]
    assert figures.luminance(image.cmap(image.norm(28))) < 0.2  # 28 of 30 is nearly the darkest blue, not white


def drawn_tick_labels(fig, axis):
    """The tick labels a reader sees on a drawn axis: (text, extent in pixels), inside the axis' view."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    low, high = sorted(axis.get_view_interval())
    return [(t.get_text(), t.get_window_extent(renderer)) for t, at in zip(axis.get_ticklabels(), axis.get_ticklocs())
            if t.get_visible() and t.get_text() and low <= at <= high]


def drawn_value(text: str) -> float:
    """The size of a number as a tick label writes it (matplotlib draws minus as U+2212)."""
    return abs(float(text.replace(",", "").replace("\u2212", "-")))


def test_regression_ticks_of_house_prices_are_apart_and_written_as_the_tables_write_them():
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = np.random.default_rng(0)
    actual = rng.uniform(50_000, 650_000, 300)
    fig = figures.regression_figure(actual + rng.normal(0, 20_000, 300), actual,
                                    f"RMSE {figures.number(68_096.4)}")
    FigureCanvasAgg(fig)
    assert fig.axes[0].get_title() == "RMSE 68,096"
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = drawn_tick_labels(fig, axis)
            assert len(labels) >= 3 and axis.get_offset_text().get_text() == ""  # no "1e5" in a corner
            assert all("e+" not in text and (drawn_value(text) < 1000 or "," in text) for text, _ in labels), labels
            for (_, a), (_, b) in zip(labels, labels[1:]):
                gap = b.x0 - a.x1 if axis is ax.xaxis else b.y0 - a.y1
                assert gap > 2, [t for t, _ in labels]  # pixels of space between neighbouring labels


def test_number_is_the_tables_format():
    assert [figures.number(v) for v in (68_096.4, 0.87634, -1234.5, float("nan"))] == \
        ["68,096", "0.8763", "-1,234", "nan"]


def history(epochs=6, lr=lambda e: 0.002):
    return [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 1 - 1 / (e + 1),
             "val_acc": 1 - 1.2 / (e + 1), "lr": lr(e)} for e in range(1, epochs + 1)]


def test_the_legend_of_compared_runs_stays_off_their_curves():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figures.curves_figure({f"run-{i}": history() for i in range(4)})
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 8 and not any(ax.get_legend() for ax in fig.axes)
    box = legend.get_window_extent(renderer)
    assert all(not box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


def test_a_constant_learning_rate_is_one_line_not_a_panel():
    flat = figures.lr_figure(history())
    assert flat.get_figheight() < 1 and "0.002 throughout" in flat.texts[0].get_text()
    cosine = figures.lr_figure(history(lr=lambda e: 0.002 / e))
    assert cosine.get_figheight() > 3 and cosine.axes[0].lines  # a changing rate is still drawn


def test_sample_grid_labels_are_readable_and_say_how_to_read_them():
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    images = torch.randint(0, 255, (16, 3, 28, 28), dtype=torch.uint8)
    fig = figures.image_grid(images, ["cat (dog)"] * 16, colors=["red"] * 16, caption="predicted (true)")
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    labels = fig.axes[0].texts
    assert len(labels) == 16 and all(t.get_window_extent(renderer).height >= 11 for t in labels)  # pixels, at 100 dpi
    assert [t.get_text() for t in fig.texts] == ["predicted (true)"]
