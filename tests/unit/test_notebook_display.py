"""Rich display for notebooks (_repr_html_, pictures, .save) and short plain reprs, on a real tiny run whose classes
are named `<b>x</b>` and `蜜蜂`: the HTML holds the values it claims, escaped, and Chinese shows as text."""
import base64
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dlkit
from dlkit.track.results import CVResult, SweepResult

EVIL, BEE = "<b>x</b>", "蜜蜂"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("nbdisplay")
    rng = np.random.default_rng(0)
    for name in ("dark", "light"):  # alike noise: the model errs on some, so there are mistakes to show
        (root / "imgs" / name).mkdir(parents=True)
        for j in range(8):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / "imgs" / name / f"{j}.png")
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for name, label in (("dark", EVIL), ("light", BEE)):
            writer.writerows([f"imgs/{name}/{p.name}", label] for p in sorted((root / "imgs" / name).iterdir()))
    return dlkit.train(data=str(root / "labels.csv"), model="quick", image_size=12, epochs=2, batch_size=4,
                       val_split=0.5, tensorboard=False, quiet=True, out=str(root / "run"))


def escaped_only(html: str) -> None:
    """Class names appear escaped, never as live markup; Chinese appears as itself."""
    assert EVIL not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert BEE in html


def images_in(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_a_run_displays_its_best_metric_epochs_timing_and_curves(run):
    html = run._repr_html_()
    best = run.summary["best_value"]
    assert f"val_acc {best:.4f} at epoch {run.summary['best_epoch']} of 2" in html
    assert run.summary["device"] in html and "training steps" in html and "report.html" in html
    assert html.count("<tr>") >= 2 + 6  # the epochs table's rows and the facts
    assert images_in(html) and all(p.startswith(PNG) for p in images_in(html))  # the curves, inline
    text = repr(run)
    assert len(text) < 250 and f"{best:.4g}" in text and "quick" in text


def test_a_predictor_shows_model_classes_and_input_spec_escaped(run):
    predictor = run.load()
    html = predictor._repr_html_()
    escaped_only(html)
    assert "quick" in html and "3x12x12" in html and "classes (2)" in html
    assert "Predictor(quick, 2 classes" in repr(predictor) and len(repr(predictor)) < 300


def test_predictions_stay_lists_and_show_thumbnails_with_bars(run):
    predictor = run.load()
    files = sorted((run.dir.parent / "imgs" / "light").iterdir())[:2]
    one = predictor.predict(files[0], topk=2)
    assert isinstance(one, list) and [name for name, _ in one] and sum(p for _, p in one) == pytest.approx(1, abs=1e-5)
    html = one._repr_html_()
    escaped_only(html)
    assert f"{one[0][1]:.3f}" in html and len(images_in(html)) == 1 and images_in(html)[0].startswith(PNG)
    many = predictor.predict(list(files), topk=1)
    assert many == [list(p) for p in many] and len(images_in(many._repr_html_())) == 2


def test_evaluate_displays_metrics_per_class_table_and_confusion_matrix(run):
    result = run.evaluate()
    assert isinstance(result, dict) and json.loads(json.dumps(result))["accuracy"] == result["accuracy"]
    html = result._repr_html_()
    escaped_only(html)
    assert f"{result['accuracy']:.4f}" in html
    for row in result["per_class"]:
        assert f"<td class=\"n\">{row['support']}</td>" in html
    assert len(images_in(html)) == 1  # the confusion matrix
    assert repr(result).startswith("EvalResult(") and f"accuracy {result['accuracy']:.4f}" in repr(result)


def test_run_views_show_themselves_and_save(run, tmp_path):
    for view in (run.plot(), run.confusion(), run.show_batch(4)):
        assert view._repr_png_().startswith(PNG)
        saved = view.save(tmp_path / "v.png")
        assert saved.read_bytes().startswith(PNG)
    mistakes = run.mistakes(3)._repr_html_()
    wrong = json.loads((run.dir / "eval" / "val_metrics.json").read_text())["mistakes"][:3]
    assert wrong and len(images_in(mistakes)) == len(wrong)
    escaped_only(run.mistakes(12)._repr_html_() + BEE)
    report = run.report()
    assert report._repr_html_().startswith("<iframe srcdoc=") and "<html" not in report._repr_html_()[:200]
    page = report.save(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "charset='utf-8'" in page


def test_show_data_displays_a_grid_and_class_counts(run):
    view = dlkit.show_data(str(run.dir.parent / "labels.csv"), n=4)
    html = view._repr_html_()
    escaped_only(html)
    counts = [int(n) for n in re.findall(r'<td class="n">(\d+)</td>', html)]
    assert len(images_in(html)) == 1 and len(counts) == 4 and sum(counts) == 16  # train and val of both classes


def test_summarize_a_name_defaults_to_the_models_own_input():
    s = dlkit.summarize("lenet-modern")
    assert s["input"] == [1, 28, 28] and s["params"] == sum(layer["params"] for layer in s["layers"])
    html = s._repr_html_()
    assert f"{s['params']:,}" in html and html.count("<tr>") == len(s["layers"]) + 4 + 1
    assert len(repr(s)) < 250 and "print(s.text)" in repr(s)
    assert s.text.splitlines()[0] == "lenet-modern on 1x28x28 inputs" and f"{s['params']:,}" in s.text
    with pytest.raises(dlkit.UserError, match="input_shape"):
        dlkit.summarize(dlkit.create_model("softmax", 1, 10, 28))


def test_cv_display_holds_every_folds_metric_and_mean_std():
    folds = [{"fold": i + 1, "run_dir": f"/x/fold-{i + 1}", "best_epoch": 1, "rows": 5, "val_acc": acc,
              "val_loss": 0.5} for i, acc in enumerate((0.8125, 0.6875))]
    result = CVResult({"cv_dir": "/x", "data": EVIL, "target": None, "model": "quick", "folds": folds, "k": 2,
                       "seed": 0, "mean": {"val_acc": 0.75, "val_loss": 0.5}, "std": {"val_acc": 0.0884, "val_loss": 0}})
    html = result._repr_html_()
    assert "0.8125" in html and "0.6875" in html and "0.7500 ± 0.0884" in html
    assert EVIL not in html and "2 folds" in repr(result)


def test_sweep_display_holds_trials_and_marks_the_best():
    trials = [{"trial": n, "state": "COMPLETE", "value": v, "lr": lr, "epochs": 2, "seconds": 1.5, "note": "",
               "run_dir": f"/s/trial-{n}"} for n, v, lr in ((0, 0.5, 0.1), (1, 0.9375, 0.01))]
    result = SweepResult({"sweep_dir": "/s", "monitor": "val_acc", "params": {"lr": "loguniform:1e-3:1"},
                          "direction": "maximize", "trials": trials, "best": {"number": 1, "value": 0.9375,
                                                                              "run_dir": "/s/trial-1"}, "files": {}})
    html = result._repr_html_()
    assert "0.9375" in html and "<tr><td class=\"best n\">1</td>" in html and "best trial 1" in repr(result)


def test_importing_dlkit_and_showing_results_never_imports_ipython(run):
    code = (f"import sys, dlkit; from dlkit.api import Run; r = dlkit.evaluate({str(run.dir)!r}); r._repr_html_(); "
            "dlkit.summarize('softmax')._repr_html_(); assert 'IPython' not in sys.modules, 'IPython imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(run.dir).parent)


def test_outside_a_notebook_training_adds_no_live_display():
    from dlkit.track.live import LiveDisplay, in_notebook, with_live

    marker = object()
    assert not in_notebook()
    assert with_live([marker], quiet=False) == [marker] and with_live(None, quiet=True) == []
    assert not any(isinstance(c, LiveDisplay) for c in with_live([], quiet=False))


def test_a_table_run_displays_its_metric_and_worst_rows(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=80), "kind": rng.choice([EVIL, BEE], 80)})
    frame["y"] = 3 * frame["x"] + (frame["kind"] == BEE) + rng.normal(0, 0.1, 80)
    frame.to_csv(tmp_path / "t.csv", index=False)
    run = dlkit.train(data=str(tmp_path / "t.csv"), target="y", epochs=2, tensorboard=False, quiet=True,
                      out=str(tmp_path / "run"))
    html = run._repr_html_()
    assert f"val_rmse {run.summary['best_value']:.4f}" in html
    worst = json.loads((run.dir / "eval" / "val_metrics.json").read_text())["worst_rows"]
    shown = run.mistakes(3)._repr_html_()
    assert all(f"<td class=\"n\">{r['row']}</td>" in shown for r in worst[:3])
    with pytest.raises(dlkit.UserError, match="no confusion matrix"):
        run.confusion()
    predictor = run.load()
    assert "regression" in predictor._repr_html_() and "target y" in predictor._repr_html_()
    assert repr(predictor).startswith("TablePredictor(") and len(repr(predictor)) < 300


def test_the_lr_finder_result_shows_its_suggestion_and_curve_and_a_short_repr():
    from dlkit.training.lr_find import LRFinderResult

    lrs = [10 ** (-7 + 8 * i / 49) for i in range(50)]
    losses = [2.3 - 2 * (i / 49) ** 2 for i in range(50)]
    result = LRFinderResult(lrs, losses, losses, 0.0042, "steepest descent", "ran all 50 steps")
    html = result._repr_html_()
    assert "suggested 0.0042 (steepest descent)" in html and len(images_in(html)) == 1
    assert len(repr(result)) < 200 and "0.0042" in repr(result)


def test_the_live_curves_keep_to_their_share_of_the_time_since_training_started():
    """A picture costs ~0.2 s of CPU: mid-run, one is drawn only once the time since the start pays for it at
    FIGURE_BUDGET (a 5 s epoch gets none until its end); the last is drawn whatever the budget."""
    import time

    from dlkit.track import live

    class Handle:
        updates = []

        def update(self, bundle, raw):
            self.updates.append(bundle)

    view = {"title": "t", "where": "w", "status": "s", "history": [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4}]}
    curves = (view["history"], [(0.1, 1.0), (0.5, 0.7)])
    shower = live._Shower(Handle(), "run")
    shower.show(view, curves)
    assert shower.flush(10) and shower.draws == 0 and shower.sent == 1  # sent at once, not drawn: 0 s paid nothing
    shower._started -= 1000  # as if training had run for 1000 s: ~10 s of drawing paid for
    shower.show(view, curves)
    shower._wake.set()
    assert shower.flush(10)
    deadline = time.time() + 10
    while shower.draws == 0 and time.time() < deadline:
        time.sleep(0.02)
    assert shower.draws == 1 and "<img" in shower.curves
    spent = shower.draw_cpu_s
    assert shower.draw_after() == pytest.approx(shower._started + 2 * spent / live.FIGURE_BUDGET, rel=1e-6)
    shower.finish(view, curves)
    assert shower.draws == 2  # the last picture, drawn at the end whatever the budget
