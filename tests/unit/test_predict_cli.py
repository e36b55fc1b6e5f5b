"""`dlkit predict` on an image model: --out writes the predictions CSV (as for tables), and a reader that stops early
(`| head -1`) ends the command quietly."""
import os
import subprocess
import sys

import pandas as pd
import pytest

import dlkit
from dlkit.cli.main import main
from fakedata import make_class_folders


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = make_class_folders(root / "pets", classes=("cat", "dog"), per_class=6, size=12)
    run = dlkit.train(data=str(data), model="softmax", epochs=1, batch_size=8, out=str(root / "run"), quiet=True,
                      tensorboard=False, report=False)
    return run, data


def test_out_writes_the_image_predictions_csv_with_the_top_k(image_run, tmp_path, capsys):
    run, data = image_run
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run.dir), str(data), "--out", str(out), "--topk", "2"]) == 0
    assert "wrote 12 prediction(s)" in capsys.readouterr().out
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "class", "probability", "class_2", "probability_2"]
    model = dlkit.load(run.dir)
    first = model.predict(table["path"][0], topk=2)
    assert (table["class"][0], table["class_2"][0]) == (first[0][0], first[1][0])
    assert table["probability"][0] == pytest.approx(first[0][1])
    assert ((table["probability"] + table["probability_2"]).round(5) == 1).all()  # two classes: all of it

    assert main(["predict", str(run.dir), str(data), "--out", str(out)]) == 2  # an existing file is kept
    assert "already exists" in capsys.readouterr().err and len(pd.read_csv(out)) == 12


def test_a_reader_that_stops_early_ends_the_command_quietly(image_run):
    run, data = image_run
    # ~150 bytes a line, 800 lines: more than the pipe and stdout's buffer hold, so predict writes after the close
    many = [str(next((data / "cat").iterdir()))] * 800
    proc = subprocess.Popen([sys.executable, "-m", "dlkit.cli.main", "predict", str(run.dir), *many, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": ""})
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 141, err  # 128 + SIGPIPE, as a shell reports for Unix tools
    assert b'"predictions"' in first and err == ""


def test_a_gif_is_an_image_in_training_and_in_predict_alike(tmp_path, capsys):
    from PIL import Image

    data = make_class_folders(tmp_path / "pets", classes=("cat", "dog"), per_class=6, size=12)
    Image.new("P", (12, 12), 3).save(data / "cat" / "imageNotFound.gif")  # a palette GIF, as the course's own
    run = dlkit.train(data=str(data), model="softmax", epochs=1, batch_size=8, out=str(tmp_path / "run"), quiet=True,
                      tensorboard=False, report=False)
    assert run.summary["train_samples"] + run.summary["val_samples"] == 13
    assert not any("non-image" in w for w in run.summary.get("data_warnings", []))
    assert main(["predict", str(run.dir), str(data / "cat"), "--topk", "1"]) == 0
    assert "imageNotFound.gif: " in capsys.readouterr().out  # a folder given to predict includes it


def test_training_and_a_folder_given_to_predict_name_the_files_they_skip(image_run, tmp_path, capsys):
    import json

    run, data = image_run
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes(next((data / "cat").glob("*.png")).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "deep").mkdir()
    (folder / "deep" / "scan.pdf").write_bytes(b"%PDF")
    (folder / ".hidden.txt").write_text("hidden: skipped silently, as in training")
    assert main(["predict", str(run.dir), str(folder), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(folder / "a.png")]
    warning = next(line for line in err.splitlines() if line.startswith("warning: "))
    assert "ignored 2 non-image file(s)" in warning and str(folder / "notes.txt") in warning
    assert str(folder / "deep" / "scan.pdf") in warning and ".hidden" not in warning
    (folder / "a.png").unlink()  # only skipped files: the one-line error says what they were
    assert main(["predict", str(run.dir), str(folder)]) == 2
    assert "notes.txt" in capsys.readouterr().err


def test_training_names_the_first_ignored_files_and_counts_the_rest(tmp_path, capsys):
    data = make_class_folders(tmp_path / "pets", classes=("cat", "dog"), per_class=4, size=12)
    for n in range(7):
        (data / "dog" / f"note{n}.txt").write_text("not an image")
    assert main(["train", "--data", str(data), "--model", "softmax", "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--no-tensorboard", "--no-report", "-q"]) == 0
    warning = next(line for line in capsys.readouterr().err.splitlines() if "non-image" in line)
    assert warning.startswith("warning: ignored 7 non-image file(s) (7 .txt): ")
    assert all(str(data / "dog" / f"note{n}.txt") in warning for n in range(5))
    assert "note5" not in warning and warning.endswith(" and 2 more")
