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
