"""Seeing inside a run: TensorBoard event contents, plots, report.html (rendered in Chromium), runs, compare,
show-data, the tensorboard command and console progress."""
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dlkit
from dlkit.cli.main import main
from fakedata import make_class_folders

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two epochs of a small net on the digits, with every TensorBoard kind and the report on."""
    out = tmp_path_factory.mktemp("seeing") / "run"
    return dlkit.train(data="digits", model="lenet-modern", epochs=2, out=str(out), quiet=True)


def test_tensorboard_holds_every_kind_with_the_right_steps(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.dir / "tb"), size_guidance={"images": 0, "histograms": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "images_per_s"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(2, 25, 2))  # 12 steps an epoch
    assert len(events.Images("data/first_train_batch")) == 1
    assert [e.step for e in events.Images("val/confusion_matrix")] == [1, 2]
    assert len(events.Images("val/mistakes (true -> predicted)")) >= 1
    n_params = sum(1 for _ in run.load().model.parameters())
    weights = [t for t in tags["histograms"] if t.startswith("weights/")]
    grads = [t for t in tags["histograms"] if t.startswith("gradients/")]
    assert len(weights) == len(grads) == n_params
    assert all(len(events.Histograms(t)) == 2 for t in weights)
    assert tags["graph"] is True
    pr = events.PluginTagToContent("pr_curves")
    assert sorted(pr) == sorted(f"pr/{i}" for i in range(10))
    assert [e.step for e in events.Tensors("pr/3")] == [1, 2]
    assert "config/text_summary" in events.PluginTagToContent("text")
    assert b"lenet-modern" in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0]
    assert events.PluginTagToContent("hparams")  # the HParams tab's experiment and session data


def test_plots_and_metrics_files_are_written(run):
    for name in ("curves", "lr", "confusion", "predictions"):
        image = Image.open(run.dir / "plots" / f"{name}.png")
        assert image.width > 200 and np.asarray(image.convert("L")).std() > 5, name
    metrics = json.loads((run.dir / "eval" / "val_metrics.json").read_text())
    assert len(metrics["per_class"]) == 10 and "most_confused" in metrics
    assert metrics["accuracy"] == pytest.approx(run.summary["best_val_acc"])


def test_report_is_self_contained(run):
    page = (run.dir / "report.html").read_text()
    for section in ("Curves", "Metrics per epoch", "Per class", "Confusion matrix", "Most confused", "Worst mistakes",
                    "Timing and environment", "Config"):
        assert section in page
    assert page.count("data:image/png;base64,") >= 4
    assert "src='http" not in page and 'src="http' not in page  # nothing fetched from elsewhere


@pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
def test_report_renders_in_headless_chromium_with_its_images(run, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text((run.dir / "report.html").read_text().replace("</body>",
                     "<script>window.onload=()=>{document.body.dataset.loaded=[...document.images]"
                     ".filter(i=>i.complete&&i.naturalWidth>0).length+'/'+document.images.length}</script></body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = dom.split('data-loaded="')[1].split('"')[0]
    shown, total = map(int, loaded.split("/"))
    assert total >= 4 and shown == total
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1200,2000", f"--screenshot={shot}", (run.dir / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2000, 1200) and pixels.std() > 20  # a rendered page, not a blank one


def test_runs_lists_and_sorts_past_runs(run, capsys):
    second = dlkit.train(data="digits", model="softmax", epochs=1, out=str(run.dir.parent / "softmax-run"),
                         tensorboard=False, report=False, quiet=True)
    assert main(["runs", str(run.dir.parent), "--sort", "best_val_acc", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == sorted([run.dir.name, second.dir.name],
                                               key=lambda n: -{run.dir.name: run.summary, second.dir.name: second.summary}[n]["best_val_acc"])
    assert all(r["wall_s"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert main(["runs", str(run.dir.parent)]) == 0
    assert "best val acc" in capsys.readouterr().out


def test_compare_overlays_curves_and_tables_metrics(run, tmp_path, capsys):
    other = dlkit.train(data="digits", model="mlp", epochs=3, out=str(tmp_path / "mlp"), tensorboard=False, report=False,
                        quiet=True)
    out = tmp_path / "cmp.png"
    assert main(["compare", str(run.dir), str(other.dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lenet-modern" in text and "mlp" in text and Image.open(out).width > 500


def test_show_data_draws_samples_and_counts_classes(tmp_path, capsys):
    folder = make_class_folders(tmp_path / "pets", per_class=5)
    (folder / "dog" / "img 0.png").unlink()  # imbalance: 5 cats, 4 dogs
    out = tmp_path / "grid.png"
    assert main(["show-data", str(folder), "--n", "6", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert Image.open(out).width > 100 and (tmp_path / "grid_counts.png").is_file()
    cat = next(line for line in text.splitlines() if line.startswith("cat"))
    dog = next(line for line in text.splitlines() if line.startswith("dog"))
    assert cat.split()[1:3] == ["4", "1"] and dog.split()[1:3] == ["3", "1"]


def test_show_data_takes_classes_in_turn_so_rare_ones_show():
    from dlkit.track.datashow import round_robin

    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 10)
    pick = round_robin(labels, 7, torch.Generator().manual_seed(0))
    assert labels[pick].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert len(set(pick.tolist())) == 7
    everything = round_robin(labels, 100, torch.Generator().manual_seed(1))
    assert sorted(everything.tolist()) == list(range(len(labels)))  # asking for more gives each sample once


def test_tensorboard_command_serves_the_runs_on_loopback(run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dlkit.cli.main", "tensorboard", str(run.dir.parent), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(30)


def test_progress_without_a_terminal_prints_plain_periodic_lines(monkeypatch, tmp_path):
    from dlkit.track import console

    monkeypatch.setattr(console.ConsoleProgress.__init__, "__defaults__", (0.0, True))  # a line at every step
    log = io.StringIO()
    dlkit.train(data="digits", model="softmax", epochs=1, out=str(tmp_path / "r"), tensorboard=False, report=False, log=log)
    text = log.getvalue()
    assert "\r" not in text
    steps = [line for line in text.splitlines() if line.strip().startswith("epoch 1/1 step")]
    assert len(steps) >= 5 and "img/s" in steps[0] and "eta" in steps[0]


def test_tensorboard_draws_its_figures_and_histograms_off_the_training_thread(tmp_path, monkeypatch):
    """Issue 14: per-epoch tracking stays off the critical path; the files still get every figure."""
    import threading

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlkit.track import figures

    drawn_on = []
    real_confusion, real_grid = figures.confusion_figure, figures.image_grid

    def confusion(*args, **kwargs):
        drawn_on.append(threading.current_thread().name)
        return real_confusion(*args, **kwargs)

    def grid(*args, **kwargs):
        drawn_on.append(threading.current_thread().name)
        return real_grid(*args, **kwargs)

    monkeypatch.setattr(figures, "confusion_figure", confusion)
    monkeypatch.setattr(figures, "image_grid", grid)
    run = dlkit.train(data="digits", model="softmax", epochs=2, out=str(tmp_path / "run"), quiet=True, report=False)
    tb_threads = [name for name in drawn_on if name.startswith("dlkit-tensorboard")]
    assert len(tb_threads) >= 3 and len(tb_threads) == len(drawn_on)  # first batch, mistakes, confusion: all off-thread
    events = EventAccumulator(str(run.dir / "tb"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    assert {"val/confusion_matrix", "data/first_train_batch"} <= set(events.Tags()["images"])
    assert any(tag.startswith("weights/") for tag in events.Tags()["histograms"])
    assert [e.step for e in events.Images("val/confusion_matrix")] == [1, 2]


def test_an_epoch_of_a_few_milliseconds_shows_no_speed():
    from dlkit.track.console import format_epoch

    record = {"epoch": 3, "lr": 0.002, "images_per_s": 52_000.0, "best": False}
    short = format_epoch({**record, "epoch_s": 0.004}, 10, "cpu fp32", "loss 0.1", unit="rows")
    timed = format_epoch({**record, "epoch_s": 2.5}, 10, "cpu fp32", "loss 0.1", unit="rows")
    assert "  - rows/s  4ms  " in short and "52,000" not in short
    assert "  52,000 rows/s  2.5s  " in timed
