"""notebooks/quickstart.ipynb, executed top to bottom in a real kernel (nbclient + ipykernel) on the shared
hymenoptera photos with one short epoch: no error cell, HTML tables and PNG pictures where the notebook says they
belong (cell tags expect-html / expect-png), and the notebook in the repository holds no outputs."""
import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient and ipykernel")

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
DATA = REPO.parent / "shared" / "data" / "hymenoptera"


def tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not present (the shared datasets live beside the repo in ../shared/data)")
    work = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # papermill's way: the notebook's own parameters cell runs, then a cell after it sets the test's values
    at = nb.cells.index(tagged(nb, "parameters")[0]) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(
        f"DATA = {str(DATA)!r}\nIMAGE_SIZE = 32\nEPOCHS = 1\nRUNS = {str(work / 'runs')!r}"))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    return nb


def mimes(cell) -> set[str]:
    return {m for out in cell.get("outputs", []) for m in out.get("data", {})}


def test_the_quickstart_runs_without_an_error_cell(executed):
    outputs = [out for c in executed.cells if c.cell_type == "code" for out in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    assert not any("Traceback" in o.get("text", "") for o in outputs if o.output_type == "stream")


def test_tables_and_pictures_appear_where_they_belong(executed):
    for cell in tagged(executed, "expect-html"):
        assert "text/html" in mimes(cell), cell.source
    for cell in tagged(executed, "expect-png"):
        assert "image/png" in mimes(cell), cell.source
    assert len(tagged(executed, "expect-html")) >= 8 and len(tagged(executed, "expect-png")) == 3


def test_the_training_cell_ends_with_the_live_displays_table_and_curves(executed):
    train = next(c for c in executed.cells if "dlkit.train(" in c.source)
    html = "".join(o["data"]["text/html"] for o in train.outputs if "text/html" in o.get("data", {}))
    assert "finished: best val_acc" in html and "data:image/png;base64," in html
    predict = next(c for c in executed.cells if ".predict(photo" in c.source)
    shown = "".join(o["data"]["text/html"] for o in predict.outputs if "text/html" in o.get("data", {}))
    assert "bees" in shown and "ants" in shown


def test_the_notebook_in_the_repository_holds_no_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
