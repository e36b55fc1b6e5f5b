"""The LR finder: an exponential ramp on a copy of the model that stops when the loss diverges, a suggestion that lies
where training at a fixed rate converges, and `--lr auto` training with the suggested rate and recording it."""
import io
import json
import math

import numpy as np
import pytest
import torch
import yaml

import dlkit
from dlkit.cli.main import main
from dlkit.config import make_config
from dlkit.track.console import Console
from dlkit.training.lr_find import ramp, smooth, suggest
from dlkit.training.trainer import Trainer

FAST = {"tensorboard": False, "report": False, "quiet": True}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one torch thread each is as fast alone and far faster when the cores are
    busy (idle OpenMP threads spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_suggest_is_the_steepest_descent_of_the_smoothed_loss_before_its_minimum():
    lrs = np.geomspace(1e-6, 1, 61).tolist()
    x = np.log10(lrs)
    # a loss falling fastest at 3e-4 (a logistic step in log-rate), lowest near 1e-1, then blowing up
    losses = (2 - 1.8 / (1 + np.exp(-3 * (x + 3.5))) + np.where(x > -1, 50 * (x + 1) ** 2, 0)).tolist()
    assert suggest(lrs, losses) == pytest.approx(3e-4, rel=0.3)  # not the minimum, nor the minimum / 10
    assert 3e-4 <= suggest(lrs, smooth(losses)) <= 1e-3  # the smoothing lags a little, no more
    assert smooth([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # bias-corrected: no pull towards 0


def test_the_ramp_trains_a_copy_grows_exponentially_and_stops_when_the_loss_diverges(tmp_path):
    cfg = make_config({"data": "digits", "out": str(tmp_path / "run"), "tensorboard": False, "report": False})
    trainer = Trainer(cfg, Console(quiet=True)).setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    lrs, losses, stopped = ramp(trainer, 1e-4, 1e4, 100)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # weights untouched
    ratios = np.diff(np.log(lrs))
    assert ratios == pytest.approx(np.full(len(ratios), math.log(1e8) / 99))  # exponential, as planned for 100 steps
    assert len(lrs) < 100 and ("diverged" in stopped or "became" in stopped)  # 1e4 is far past any useful rate
    assert lrs[-1] > 1e-1 and min(losses) < losses[0] / 2  # it stopped after learning, not at the first wobble


def test_the_suggestion_lies_where_training_converges(tmp_path, capsys):
    png = tmp_path / "lr.png"
    assert main(["lr-find", "--data", "digits", "--out", str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:4] == b"\x89PNG" and result["method"] == "steepest descent"
    suggestion = result["suggestion"]
    # where does training converge on this problem? Train 2 epochs at a rate per decade and look (measured: val_acc
    # 0.34, 0.91, 0.97, 0.50 and 0.10 from 1e-4 to 1)
    converged = {}
    for lr in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        run = dlkit.train(data="digits", epochs=2, lr=lr, out=str(tmp_path / f"lr{lr:g}"), **FAST)
        converged[lr] = run.summary["best_value"] >= 0.85
    rates = [lr for lr, ok in converged.items() if ok]
    assert not converged[1e-4] and not converged[1.0], converged  # the band has edges on both sides
    assert min(rates) <= suggestion <= max(rates), (suggestion, converged)


def test_lr_auto_trains_with_the_suggestion_and_records_the_number(tmp_path):
    log = io.StringIO()
    run = dlkit.train(data="digits", epochs=1, lr="auto", out=str(tmp_path / "run"), tensorboard=False, report=False,
                      log=log)
    printed = [line for line in log.getvalue().splitlines() if line.startswith("lr auto:")]
    assert len(printed) == 1 and "(LR finder, steepest descent" in printed[0]
    used = yaml.safe_load((run.dir / "config.yaml").read_text())["lr"]
    assert isinstance(used, float) and printed[0].startswith(f"lr auto: {used:.2g} ")
    expected = dlkit.lr_find(data="digits", out=None, quiet=True).suggestion  # the same finder, run on its own
    assert used == pytest.approx(float(f"{expected:.2g}"))
    assert (run.dir / "lr_find.png").is_file() and run.history[0]["lr"] == pytest.approx(used)


def test_lr_auto_reads_the_data_once_for_the_finder_and_the_run(tmp_path, monkeypatch):
    from dlkit.data.modality import Images

    prepared, original = [], Images.prepare
    monkeypatch.setattr(Images, "prepare", staticmethod(lambda *a, **k: prepared.append(a) or original(*a, **k)))
    run = dlkit.train(data="digits", epochs=1, lr="auto", out=str(tmp_path / "run"), **FAST)
    assert len(prepared) == 1  # the run trains on what the finder read, decoded and split
    assert run.summary["train_samples"] > 0 and run.history[0]["val_acc"] > 0.5


def test_a_ramp_the_wrong_way_round_is_one_line_and_exit_2(capsys):
    assert main(["lr-find", "--data", "digits", "--start", "1", "--end", "1e-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the LR finder ramps from --start to a larger --end") and "\n" not in err
