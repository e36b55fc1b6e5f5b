"""Data left out is a warning, not chatter: shown under -q (on stderr, stdout stays --json's one object), and
recorded in summary.json and report.html, for images (a truncated JPEG, a stray file) and tables (a row with no
target), from a fresh decode and from the decoded-image cache alike."""
from __future__ import annotations

import json

from dlkit.cli.main import main
from fakedata import make_class_folders

FAST = ["--epochs", "1", "--workers", "0", "--no-tensorboard", "--image-size", "8", "--model", "softmax"]


def _messy_folder(tmp_path):
    data = make_class_folders(tmp_path / "messy", ("ants", "bees"), per_class=4, size=12)
    good = next((data / "ants").glob("*.png")).read_bytes()
    (data / "ants" / "torn.png").write_bytes(good[: len(good) // 2])  # a truncated image: unreadable
    (data / "bees" / "notes.txt").write_text("not an image")
    return data


def test_skipped_images_are_warned_under_quiet_and_recorded(tmp_path, capsys):
    data = _messy_folder(tmp_path)
    assert main(["train", "--data", str(data), *FAST, "-q", "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "warning: skipped 1 unreadable image(s)" in err and "torn.png" in err
    assert "warning: ignored 1 non-image file(s)" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any("torn.png" in w for w in summary["data_warnings"]) and len(summary["data_warnings"]) == 2
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Data left out" in report and "torn.png" in report

    # the second run reads the decoded folder from the disk cache: the warning must survive it
    assert main(["train", "--data", str(data), *FAST, "--json", "--out", str(tmp_path / "again")]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)  # stdout is the one JSON object, the warnings went to stderr
    assert "warning: skipped 1 unreadable image(s)" in err
    assert any("torn.png" in w for w in summary["data_warnings"])


def test_dropped_table_rows_are_warned_under_quiet(tmp_path, capsys):
    rows = ["x,y"] + [f"{(i * 7919) % 101 / 10},{i % 2}" for i in range(30)] + ["3.3,"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--target", "y", "--epochs", "1", "-q",
                 "--no-tensorboard", "--no-report", "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "warning: dropped 1 row(s) with no value in the target 'y'" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_warnings"] == ["dropped 1 row(s) with no value in the target 'y'"]
