"""The commands that look: `dlkit summary` assumes the batch a run trained with (or train's default), and `compare`
and `lr-find` keep an existing file unless --overwrite, as predict and export do."""
import json

import pytest

import dlkit
from dlkit.cli.main import main
from fakedata import make_class_folders


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("looking")
    data = make_class_folders(root / "pets", per_class=6, size=12)
    return dlkit.train(data=str(data), model="softmax", epochs=1, batch_size=8, out=str(root / "run"), quiet=True,
                       tensorboard=False, report=False)


def summary_batch(capsys, *argv) -> int:
    assert main(["summary", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["batch_size"]


def test_summary_assumes_the_runs_own_batch_or_trains_default(run, capsys):
    assert summary_batch(capsys, run.dir) == 8 == summary_batch(capsys, run.checkpoint)  # trained at 8
    assert summary_batch(capsys, run.dir, "--batch-size", 2) == 2
    assert summary_batch(capsys, "lenet", "--input", "1x28x28") == 128  # dlkit train's default for images
    assert summary_batch(capsys, "mlp", "--input", "7") == 256  # and for tables (at most; fitted to the rows)


def test_compare_keeps_an_existing_file_unless_overwrite(run, tmp_path, capsys):
    out = tmp_path / "compare.png"
    out.write_bytes(b"mine")
    assert main(["compare", str(run.dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(["compare", str(run.dir), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_lr_find_keeps_an_existing_plot_before_any_work(tmp_path, capsys, monkeypatch):
    import dlkit.training.lr_find as finder

    monkeypatch.setattr(finder, "lr_find", lambda *a, **k: pytest.fail("the finder ran"))
    out = tmp_path / "lr_find.png"
    out.write_bytes(b"mine")
    assert main(["lr-find", "--data", "digits", "--out", str(out)]) == 2
    assert "already exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"mine"
    monkeypatch.chdir(tmp_path)  # the default, ./lr_find.png, is kept too
    assert main(["lr-find", "--data", "digits"]) == 2
