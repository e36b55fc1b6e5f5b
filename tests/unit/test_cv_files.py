"""What `dlkit cv` writes beside its folds: cv.md is a Markdown document (a title and a table a Markdown renderer
shows as one), cv.png reads its numbers as the tables do."""
import json
import re

import numpy as np
import pandas as pd
import pytest

import dlkit

FAST = {"tensorboard": False, "report": False, "quiet": True}


@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"rooms": rng.integers(1, 8, 60), "kind": rng.choice(["a", "b"], 60)})
    frame["price"] = 60_000 + 15_000 * frame["rooms"] + rng.normal(0, 5_000, 60)  # house prices: tens of thousands
    frame.to_csv(root / "houses.csv", index=False)
    dlkit.cross_validate(data=str(root / "houses.csv"), target="price", folds=3, epochs=3, out=str(root / "cv"), **FAST)
    return root / "cv"


def markdown_tables(text: str) -> list[list[list[str]]]:
    """GitHub-flavoured Markdown tables in `text`: a header row, a delimiter row of --- cells, then body rows."""
    lines, tables = text.splitlines(), []
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    for i in range(len(lines) - 1):
        header, delimiter = lines[i], lines[i + 1]
        if header.startswith("|") and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", delimiter.strip()) \
                and len(cells(header)) == len(cells(delimiter)):
            body = []
            for line in lines[i + 2:]:
                if not line.startswith("|"):
                    break
                body.append(cells(line))
            tables.append([cells(header), *body])
    return tables


def test_cv_md_is_a_titled_markdown_table_of_the_folds(cv_folder):
    text = (cv_folder / "cv.md").read_text()
    summary = json.loads((cv_folder / "cv.json").read_text())
    assert re.match(r"# 3-fold cross-validation of `\S+` on `houses.csv`, target `price`\n", text)
    (table,) = markdown_tables(text)
    header, *rows = table
    assert header[0] == "fold" and "rmse" in header and all(len(r) == len(header) for r in rows)
    assert [r[0] for r in rows] == ["1", "2", "3", "**mean ± std**"]
    rmse = header.index("rmse")
    assert rows[0][rmse] == f"{summary['folds'][0]['val_rmse']:,.0f}"  # the console's number format


def test_cv_png_writes_numbers_as_the_tables_do_and_names_its_mean_line(cv_folder, tmp_path, monkeypatch):
    from dlkit import cv
    from dlkit.track import figures

    summary = json.loads((cv_folder / "cv.json").read_text())
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig) or path)
    cv._write(tmp_path, summary)
    (fig,) = drawn
    rmse = next(ax for ax in fig.axes if ax.get_title().startswith("rmse"))
    mean, std = summary["mean"]["val_rmse"], summary["std"]["val_rmse"]
    assert rmse.get_title() == f"rmse: {mean:,.0f} ± {std:,.0f}"  # as cv.md: 13,674 ± 4,495, not 1.367e+04
    assert sorted(t.get_text() for t in rmse.get_legend().get_texts()) == ["fold", f"mean {mean:,.0f}"]
    fig.canvas.draw()
    ticks = [t.get_text() for t in rmse.yaxis.get_ticklabels() if t.get_text()]
    assert ticks and all("e+" not in t for t in ticks) and rmse.yaxis.get_offset_text().get_text() == ""
