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
