"""report.html's Config section lists what the run chose (not all ~70 options, table ones on an image run)."""
import re

import dlkit
from fakedata import make_class_folders


def config_section(html: str) -> str:
    return html[html.index("<h2>Config</h2>"):]


def test_an_image_runs_report_lists_the_options_it_set_and_no_table_options(tmp_path):
    data = make_class_folders(tmp_path / "pets", per_class=6, size=12)
    run = dlkit.train(data=str(data), model="softmax", epochs=2, batch_size=8, out=str(tmp_path / "run"), quiet=True,
                      tensorboard=False, report=True)
    section = config_section((run.dir / "report.html").read_text())
    shown = re.findall(r"<tr><td>([a-z_]+)</td>", section)
    assert {"data", "model", "epochs", "batch_size", "tensorboard"} <= set(shown)
    assert not {"target", "drop", "numeric_scaling", "categorical_encoding", "recipe_defaults"} & set(shown)
    assert len(shown) < 15 and "options are at their defaults; config.yaml lists every option" in section


def test_config_yaml_and_the_report_hold_the_image_side_and_channels_used_and_the_run_resumes(tmp_path):
    import json

    import yaml

    from dlkit.cli.main import main
    from dlkit.storage import load_tensors

    data, run = make_class_folders(tmp_path / "pets", per_class=6, size=12), tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "softmax", "--epochs", "2", "--batch-size", "8",
                 "--out", str(run), "--no-tensorboard", "-q"]) == 0
    _, meta = load_tensors(run / "checkpoints" / "best.safetensors")
    spec = meta["spec"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["image_size"], saved["channels"]) == (spec["image_size"], spec["channels"]) == (12, 3)  # not null
    section = config_section((run / "report.html").read_text())
    rows = dict(re.findall(r"<tr><td>([a-z_]+)</td><td class='l'>([^<]*)</td>", section))
    assert (rows["image_size"], rows["channels"]) == ("12", "3")
    assert main(["train", "--resume", str(run), "--epochs", "3", "-q"]) == 0  # its config now names them: accepted
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3] and yaml.safe_load((run / "config.yaml").read_text())["image_size"] == 12


def test_the_reports_sample_grid_says_how_to_read_its_labels(tmp_path, monkeypatch):
    from dlkit.track import figures

    drawn = []

    def spy(*args, **kwargs):
        fig = grid(*args, **kwargs)
        drawn.append((list(args[1]), [t.get_text() for t in fig.texts]))
        return fig

    grid = figures.image_grid
    monkeypatch.setattr(figures, "image_grid", spy)
    data = make_class_folders(tmp_path / "pets", per_class=6, size=12)
    run = dlkit.train(data=str(data), model="softmax", epochs=1, batch_size=8, out=str(tmp_path / "run"), quiet=True,
                      tensorboard=False, report=True)
    titles, legend = next(d for d in drawn if all(re.fullmatch(r"\w+ \(\w+\)", t) for t in d[0]))
    assert len(titles) == run.summary["val_samples"] and len(legend) == 1  # a line of legend under the images
    assert "predicted (true)" in legend[0] and "green where right, red where wrong" in legend[0]
    assert (tmp_path / "run" / "plots" / "predictions.png").is_file()
