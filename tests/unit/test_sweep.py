"""Sweeps on Optuna: --param parsing, a pruned sweep of run folders and its outputs (table, best.yaml that trains,
plots), the direction of a regression's metric, two processes sharing one SQLite study for exactly --trials, and a
SIGKILLed sweep continued by the same command."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

optuna = pytest.importorskip("optuna", reason="sweeps need the optuna extra")

import dlkit  # noqa: E402
from dlkit.cli.main import main  # noqa: E402
from dlkit.errors import UserError  # noqa: E402
from dlkit.track.runs import list_runs  # noqa: E402
from dlkit.tune.space import apply_params, parse_param, parse_params  # noqa: E402

FAST = {"tensorboard": False, "report": False}
FAST_FLAGS = ["--no-tensorboard", "--no-report"]
WAIT_S = 300  # generous: the machine may be busy; the waits below end on events, not on time


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one torch thread each is as fast alone and far faster when the cores are
    busy (idle OpenMP threads spin); the subprocesses below get OMP_NUM_THREADS=1 for the same reason."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def states(sweep_dir: Path, name: str | None = None, storage: str | None = None) -> dict[int, str]:
    if storage is None:
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / "study.journal")))
    study = optuna.load_study(study_name=name or sweep_dir.name, storage=storage)
    return {t.number: t.state.name for t in study.get_trials()}


def counted(found: dict[int, str]) -> list[int]:
    return [n for n, s in found.items() if s in ("COMPLETE", "PRUNED")]


# ---- the search space ------------------------------------------------------------------------------------------------

def test_params_parse_every_kind_and_bad_ones_name_the_accepted_forms():
    assert parse_param("lr=loguniform:1e-4:1e-1").args == (1e-4, 1e-1)
    assert parse_param("batch-size=choice:64,128,256").args == (64, 128, 256)  # dashes allowed, values typed
    assert parse_param("batch_size=choice:64,128,256").name == "batch_size"
    assert parse_param("model_args.dropout=uniform:0:0.5").args == (0.0, 0.5)
    assert parse_param("epochs=int:2:1e1").args == (2, 10)
    assert parse_params({"lr": "logint:1:8"})[0].kind == "logint"
    for bad, words in [("lr=log:1e-4:1", "loguniform:LOW:HIGH, uniform:LOW:HIGH"), ("lr", "NAME=KIND:ARGS"),
                       ("lr=loguniform:0:1", "LOW > 0"), ("lr=uniform:1:0.5", "below HIGH"),
                       ("lr=loguniform:1e-4", "LOW:HIGH"), ("epochs=int:1:2.5", "whole number"),
                       ("colour=uniform:0:1", "not a training option"), ("out=choice:a,b", "not a training option"),
                       ("model_args=uniform:0:1", "model_args.dropout"), ("lr.x=uniform:0:1", "only model_args")]:
        with pytest.raises(UserError, match=words) as error:
            parse_param(bad)
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="more than once"):
        parse_params(["lr=uniform:0.1:0.2", "lr=uniform:0.2:0.3"])


def test_bad_param_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path / "s"), "--param", "lr=1e-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad --param 'lr=1e-3'") and "choice:A,B,..." in err and "\n" not in err
    # values checked against the config before any trial: a negative lr is refused up front
    assert main(["sweep", "--out", str(tmp_path / "s"), "--param", "lr=uniform:-1:1"]) == 2
    assert "the value -1.0 is not valid: --lr must be positive" in capsys.readouterr().err
    assert main(["sweep", "--param", "lr=uniform:0.1:1"]) == 2
    assert "needs --out SWEEP_DIR" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_trial_values_join_the_base_model_args_instead_of_replacing_them():
    base = {"model": "mlp", "model_args": {"hidden": [32]}, "lr": 0.1}
    out = apply_params(base, {"model_args": {"hidden": [32]}, "data_args": {}}, {"model_args.dropout": 0.2, "lr": 0.01})
    assert out["model_args"] == {"hidden": [32], "dropout": 0.2} and out["lr"] == 0.01
    assert base["model_args"] == {"hidden": [32]} and base["lr"] == 0.1  # the sweep's base is left alone


def test_of_two_workers_racing_for_the_last_slot_exactly_one_gets_it():
    from dlkit.tune.study import has_slot

    study = optuna.create_study()
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    first, second = study.ask(), study.ask()  # both asked while the study held 2 of 3: both passed a count check
    assert has_slot(first, 3) and not has_slot(second, 3)
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # the first one's process died: its slot is free again
    assert has_slot(second, 3)


# ---- a sweep, start to end ------------------------------------------------------------------------------------------

def test_a_sweep_prunes_bad_trials_and_leaves_run_folders_a_table_best_yaml_and_plots(tmp_path, capsys):
    out = tmp_path / "sweep"
    # lr over three decades: trials far below the first one's rate are clearly worse after an epoch, and the real
    # median pruner (counting from one finished trial) stops them
    summary = dlkit.sweep(data="digits", epochs=2, seed=0, out=str(out), trials=4, prune_startup=1,
                          params=["lr=loguniform:1e-5:1e-2"], **FAST)
    found = states(out)
    assert sorted(found) == [0, 1, 2, 3] and len(counted(found)) == 4
    assert "PRUNED" in found.values() and "COMPLETE" in found.values()
    assert summary["direction"] == "maximize" and summary["monitor"] == "val_acc"
    study = optuna.load_study(study_name="sweep", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert study.best_trial.value == max(t.value for t in complete)  # maximised
    for t in study.trials:  # each trial is a normal run; the objective is the run's best monitored metric
        run = out / f"trial-{t.number:03d}"
        s = json.loads((run / "summary.json").read_text())
        assert (run / "checkpoints" / "best.safetensors").is_file()
        assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == pytest.approx(t.params["lr"])
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(s["best_value"]) and s["epochs"] == 2 and s["stopped"] is None
        else:  # stopped early, and says why
            assert s["epochs"] < 2 and "pruned" in s["stopped"]["reason"]
            assert max(t.intermediate_values) == s["epochs"]
    assert_pruned_exactly_below_the_median(study.trials, startup=1)
    assert {r["name"] for r in list_runs(out)} == {f"trial-{n:03d}" for n in range(4)}  # `dlkit runs SWEEP_DIR`
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == [found[n] for n in range(4)] and "lr" in rows[0]
    printed = capsys.readouterr().out
    assert "trial  state" in printed and f"best: trial {study.best_trial.number}" in printed
    for png in ("optimization_history.png", "param_importances.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert "out" not in best and best["lr"] == pytest.approx(study.best_trial.params["lr"])
    # best.yaml is a config `dlkit train --config` takes as it is
    assert main(["train", "--config", str(out / "best.yaml"), "--out", str(tmp_path / "again"), "--epochs", "1",
                 "-q", *FAST_FLAGS]) == 0
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert again["lr"] == pytest.approx(best["lr"]) and again["data"] == "digits"


def assert_pruned_exactly_below_the_median(trials, startup: int) -> None:
    """A trial run after `startup` finished ones was pruned at the first epoch where its best value so far fell below
    the median of the trials finished before it at that epoch, and not before (val_acc: higher is better)."""
    decided = 0
    for t in trials:
        finished = [f for f in trials if f.number < t.number and f.state.name == "COMPLETE"]
        if len(finished) < startup:
            assert t.state.name == "COMPLETE", t
            continue
        below = [step for step in sorted(t.intermediate_values)
                 if max(v for s, v in t.intermediate_values.items() if s <= step)
                 < np.median([f.intermediate_values[step] for f in finished if step in f.intermediate_values])]
        if t.state.name == "PRUNED":
            assert below and below[0] == max(t.intermediate_values), (t.number, t.intermediate_values)
        else:
            assert not below, (t.number, t.intermediate_values)
        decided += 1
    assert decided == len(trials) - startup


def regression_csv(path: Path, n: int = 80) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(0, 0.1, n)}).to_csv(path)
    return path


def test_a_regression_sweep_minimises_the_error(tmp_path):
    data = regression_csv(tmp_path / "reg.csv")
    out = tmp_path / "sweep"
    summary = dlkit.sweep(data=str(data), target="y", model="linear", epochs=3, out=str(out), trials=3,
                          pruner="none", params={"lr": "loguniform:1e-4:1e-1"}, quiet=True, **FAST)
    assert summary["monitor"] == "val_rmse" and summary["direction"] == "minimize"
    values = {r["trial"]: r["value"] for r in summary["trials"]}
    assert summary["best"]["value"] == min(values.values()) and len(set(values.values())) == 3


def test_the_seed_repeats_the_proposals_cv_scores_by_the_folds_mean_and_a_diverged_trial_counts_as_pruned(tmp_path):
    data = regression_csv(tmp_path / "reg.csv")
    common = dict(data=str(data), target="y", model="linear", epochs=2, pruner="none", quiet=True, **FAST)

    def proposed(seed: int, name: str) -> list[float]:
        summary = dlkit.sweep(**common, seed=seed, trials=2, out=str(tmp_path / name),
                              params={"lr": "loguniform:1e-3:1e-1"})
        return [t["lr"] for t in summary["trials"]]

    assert proposed(3, "a") == proposed(3, "b") != proposed(4, "c")  # TPE seeded by --seed

    cv = dlkit.sweep(**common, trials=1, cv=2, out=str(tmp_path / "cv"), params={"lr": "loguniform:1e-3:1e-1"})
    trial = tmp_path / "cv" / "trial-000"
    folds = json.loads((trial / "cv.json").read_text())
    assert cv["trials"][0]["value"] == pytest.approx(np.mean([f["val_rmse"] for f in folds["folds"]]))
    assert len(folds["folds"]) == 2 and (trial / "fold-2" / "summary.json").is_file()

    diverged = dlkit.sweep(**common, optimizer="sgd", trials=1, out=str(tmp_path / "nan"),
                           params={"lr": "loguniform:1e8:1e9"})
    assert states(tmp_path / "nan") == {0: "PRUNED"} and diverged["trials"][0]["note"] == "loss diverged"
    assert len(counted(states(tmp_path / "nan"))) == 1  # one of --trials spent, as a pruned one is


# ---- several processes, and a killed sweep ---------------------------------------------------------------------------

# A sweep command whose trial named on the command line pauses after its first epoch: it writes a mark file and
# waits for a "go" file, so the test acts while that trial is RUNNING, on an event rather than a clock.
PAUSING_SWEEP = """
import sys, time
from pathlib import Path
from dlkit import api
from dlkit.cli.main import main

mark, go, paused = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

class Pause:
    def on_epoch_end(self, trainer, record):
        if trainer.run_dir.name == paused and record["epoch"] == 1:
            mark.touch()
            deadline = time.time() + 300
            while not go.exists() and time.time() < deadline:
                time.sleep(0.05)

real = api.train
api.train = lambda *a, callbacks=None, **k: real(*a, callbacks=[*(callbacks or []), Pause()], **k)
sys.exit(main(sys.argv[4:]))
"""


def start_pausing(tmp_path: Path, paused_trial: str, args: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    script, mark, go = tmp_path / "pausing_sweep.py", tmp_path / "paused.mark", tmp_path / "go.mark"
    script.write_text(textwrap.dedent(PAUSING_SWEEP))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(mark), str(go), paused_trial, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, mark, go


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + WAIT_S
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out waiting for the sweep's trial to pause"
        time.sleep(0.05)


def sweep_args(out: Path, trials: int, *extra: str) -> list[str]:
    return ["sweep", "--data", "digits", "--epochs", "2", "--trials", str(trials), "--out", str(out),
            "--param", "lr=loguniform:1e-3:1e-2", "--pruner", "none", "-q", *FAST_FLAGS, *extra]


def test_two_processes_share_one_sqlite_study_for_exactly_trials_and_a_killed_one_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "sweep"
    args = sweep_args(out, 3, "--storage", url, "--study-name", "shared")
    first, mark, _ = start_pausing(tmp_path, "trial-000", args)  # creates the study, then holds trial 0 running
    wait_for(mark, first)
    assert main(args) == 0  # a second process joins: trial 0 holds a slot, so it runs exactly the other two
    storage = optuna.storages.RDBStorage(url)
    assert states(out, "shared", storage) == {0: "RUNNING", 1: "COMPLETE", 2: "COMPLETE"}
    study = optuna.load_study(study_name="shared", storage=storage)
    owners = {t.number: t.user_attrs["owner"]["pid"] for t in study.trials}
    assert owners[0] == first.pid and owners[1] == owners[2] == os.getpid()  # both processes ran trials
    first.send_signal(signal.SIGKILL)  # the first process dies mid-trial
    first.communicate(timeout=WAIT_S)
    assert main(args) == 0  # the same command again: the lost trial is failed, never counted, and its slot rerun
    assert states(out, "shared", storage) == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE"}
    rows = {r["trial"]: r for r in csv.DictReader((out / "trials.csv").open())}
    assert rows["0"]["note"] == "its process ended before the trial did" and rows["0"]["value"] == ""
    assert (out / "trial-003" / "summary.json").is_file() and not (out / "trial-000" / "summary.json").exists()
    assert main(args) == 0  # full: a third run starts nothing
    assert len(states(out, "shared", storage)) == 4


def test_jobs_runs_worker_processes_that_share_the_journal_for_exactly_trials(tmp_path):
    data = regression_csv(tmp_path / "reg.csv")
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dlkit", "sweep", "--data", str(data), "--target", "y", "--model",
                             "linear", "--epochs", "2", "--trials", "3", "--jobs", "2", "--out", str(out), "--param",
                             "lr=loguniform:1e-3:1e-1", "--pruner", "none", "-q", *FAST_FLAGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err[-3000:]
    assert states(out) == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE"}  # exactly --trials, none run twice
    study = optuna.load_study(study_name="sweep", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    owners = {t.user_attrs["owner"]["pid"] for t in study.trials}
    assert proc.pid not in owners and len(owners) <= 2  # run by the worker processes, not the command itself
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-000", "trial-001", "trial-002"]


def test_a_journal_trial_whose_process_is_gone_is_failed_and_its_slot_rerun(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = sweep_args(out, 2)
    assert main([*args[:6], "1", *args[7:]]) == 0  # one trial of the study's two, then the sweep "is killed":
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="sweep", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(out / "study.journal"))))
    lost = study.ask()  # a trial left RUNNING by a process that no longer exists on this host
    lost.set_user_attr("owner", {"host": socket.gethostname(), "pid": int(gone.stdout), "started": "1"})
    assert states(out) == {0: "COMPLETE", 1: "RUNNING"}
    assert main(args) == 0
    assert states(out) == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}
    assert "trial  state" in capsys.readouterr().out  # -q: the table alone


@pytest.mark.parametrize("trials", [3, 24])
def test_the_plots_number_trials_whole_and_say_how_few_the_importances_rest_on(trials, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from dlkit.track import figures
    from dlkit.tune.report import write_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True) + t.suggest_int("width", 1, 9) / 100,
                   n_trials=trials)
    drawn, save = {}, figures.save
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.setdefault(Path(path).name, fig) and save(fig, path))
    files = write_plots(study, SimpleNamespace(dir=tmp_path, monitor="val_acc"), SimpleNamespace(print=print))
    assert set(files) == {"history_png", "importance_png"}
    history = drawn["optimization_history.png"]
    FigureCanvasAgg(history).draw()
    shown = [t.get_text() for t in history.axes[0].get_xticklabels() if t.get_text()]
    assert shown and all(text.lstrip("−-").isdigit() for text in shown)  # 0, 1, 2: no 0.5 between trials
    title = drawn["param_importances.png"].axes[0].get_title(loc="left")
    assert title.startswith("Hyperparameter Importances\n")  # Optuna's title, the caveat under it
    assert f"from {trials} finished trials" in title
    assert ("too few to rank them reliably" in title) == (trials < 20)
