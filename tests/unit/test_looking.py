"""The commands that look: `dlkit summary` assumes the batch a run trained with (or train's default)."""
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
