"""The CLI end to end on tiny generated data: train, eval, predict, resume, listings, and every bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlkit.cli.main import main
from fakedata import make_class_folders

FAST = ["--epochs", "2", "--batch-size", "8", "--no-tensorboard", "-q"]


@pytest.fixture
def folder(tmp_path):
    return make_class_folders(tmp_path / "pets")


def run_cli(*argv, capsys=None):
    code = main([str(a) for a in argv])
    out = capsys.readouterr() if capsys else None
    return code, out


def test_train_then_predict_and_eval_on_a_folder(folder, tmp_path, capsys):
    run = tmp_path / "run"
    code, out = run_cli("train", "--data", folder, "--model", "quick", "--image-size", 16, "--out", run,
                        "--epochs", 3, "--batch-size", 4, "--lr", 0.003, "--json", capsys=capsys)
    assert code == 0
    summary = json.loads(out.out)
    assert summary["run_dir"] == str(run) and summary["epochs"] == 3
    for part in ("config.yaml", "metrics.jsonl", "checkpoints/best.safetensors", "checkpoints/last.safetensors", "tb"):
        assert (run / part).exists(), part
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    code, out = run_cli("predict", run, folder / "dog", "--json", "--topk", 2, capsys=capsys)
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert code == 0 and len(rows) == 10
    assert all(r["predictions"][0]["class"] in ("cat", "dog") for r in rows)
    assert all(abs(sum(p["probability"] for p in r["predictions"]) - 1) < 1e-4 for r in rows)

    code, out = run_cli("eval", run, "--json", capsys=capsys)
    metrics = json.loads(out.out)
    assert code == 0 and metrics["accuracy"] == pytest.approx(summary["best_val_acc"])
    assert Path(metrics["confusion_png"]).is_file()
    assert "top5_accuracy" not in metrics  # only two classes


def test_train_prints_epoch_lines_with_speed_and_device(folder, tmp_path, capsys):
    code, out = run_cli("train", "--data", folder, "--model", "softmax", "--out", tmp_path / "r", "--epochs", 2,
                        "--no-tensorboard", capsys=capsys)
    assert code == 0
    lines = [line for line in out.out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and all("img/s" in line and "cpu fp32" in line for line in lines)
    assert "checkpoint:" in out.out and "layout: class folders" in out.out


def test_resume_continues_to_more_epochs(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "--data", folder, "--model", "mlp", "--out", run, *FAST) == (0, None)
    code, _ = run_cli("train", "--resume", run, "--epochs", 4, "-q")
    assert code == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_a_run_made_with_a_relative_data_path_evaluates_and_resumes_from_another_folder(folder, tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "--data", "pets", "--model", "mlp", "--out", "run", *FAST) == (0, None)
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert f"data: {folder.resolve()}" in config  # saved absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out = run_cli("eval", tmp_path / "run", "--json", capsys=capsys)
    assert code == 0 and 0 <= json.loads(out.out)["accuracy"] <= 1
    assert run_cli("train", "--resume", tmp_path / "run", "--epochs", 3, "-q") == (0, None)


def test_resume_with_another_model_is_refused(folder, tmp_path, capsys):
    run = tmp_path / "run"
    run_cli("train", "--data", folder, "--model", "mlp", "--out", run, *FAST)
    code, out = run_cli("train", "--resume", run, "--model", "softmax", "--epochs", 3, capsys=capsys)
    assert code == 2 and "cannot resume" in out.err


def test_predict_reports_a_broken_file_and_still_predicts_the_rest(folder, tmp_path, capsys):
    run = tmp_path / "run"
    run_cli("train", "--data", folder, "--model", "softmax", "--out", run, *FAST)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    code, out = run_cli("predict", run, folder / "cat" / "img 0.png", broken, capsys=capsys)
    assert code == 2
    assert "img 0.png:" in out.out and "broken.jpg" in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "/no/such/folder"], "neither a built-in"),
    (["train", "--lr", "-1"], "--lr must be positive"),
    (["train", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["train", "--model", "resnet-18"], "did you mean resnet18"),
    (["train", "--model", "lenet", "--image-size", "8"], "cannot take 1x8x8"),
    (["train", "--epochs", "0"], "--epochs must be at least 1"),
    (["predict", "/no/such/run", "x.png"], "does not exist"),
    (["eval", "/no/such/run"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(*argv, capsys=capsys)
    assert code == 2
    assert message in out.err and out.err.count("\n") == 1 and out.err.startswith("error: ")
    assert not (tmp_path / "runs").exists()  # nothing written for a rejected command


def test_empty_and_single_class_folders_are_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out = run_cli("train", "--data", tmp_path / "empty", capsys=capsys)
    assert code == 2 and "no images found" in out.err
    make_class_folders(tmp_path / "one", classes=("cat",))
    code, out = run_cli("train", "--data", tmp_path / "one", capsys=capsys)
    assert code == 2 and "only one class" in out.err


def test_existing_run_folder_is_never_overwritten(folder, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    code, out = run_cli("train", "--data", folder, "--out", run, *FAST, capsys=capsys)
    assert code == 2 and "already exists" in out.err
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]


def test_user_errors_print_no_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dlkit.cli.main", "train", "--data", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_listings_name_models_and_layouts(capsys):
    assert run_cli("models", capsys=capsys)[1].out.count("\n") >= 11
    code, out = run_cli("datasets", capsys=capsys)
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "label folders", "CSV manifest"):
        assert name in out.out


def test_config_file_and_flags_combine(folder, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {folder}\nmodel: softmax\nepochs: 1\nbatch_size: 4\n")
    run = tmp_path / "run"
    code, _ = run_cli("train", "--config", config, "--epochs", 2, "--out", run, "-q", "--no-tensorboard", capsys=capsys)
    saved = (run / "config.yaml").read_text()
    assert code == 0 and "epochs: 2" in saved and "batch_size: 4" in saved and "model: softmax" in saved
    config.write_text("epoch: 3\n")
    code, out = run_cli("train", "--config", config, capsys=capsys)
    assert code == 2 and "unknown config key(s) epoch" in out.err


def test_an_op_without_a_deterministic_kernel_is_one_line_naming_the_op(monkeypatch, capsys):
    import dlkit.api

    def strict(*args, **kwargs):  # what torch raises under use_deterministic_algorithms(True)
        raise RuntimeError("adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you "
                           "set 'torch.use_deterministic_algorithms(True)'. You can turn off determinism ...")

    monkeypatch.setattr(dlkit.api, "train", strict)
    assert main(["train", "--deterministic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "adaptive_avg_pool2d_backward_cuda has no deterministic implementation" in err


def test_the_command_exits_fast_but_finishes_what_a_normal_exit_would(tmp_path):
    """exit_now skips the interpreter's teardown, yet joins other threads (idle pool workers too), runs atexit
    handlers and flushes buffered output, and keeps the exit code."""
    script = f"""
import atexit, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from dlkit.cli.main import exit_now

ThreadPoolExecutor(2).submit(lambda: None)  # an idle worker that a plain join would wait on forever
threading.Thread(target=lambda: (time.sleep(0.3), Path(r"{tmp_path}/thread").write_text("done"))).start()
atexit.register(lambda: Path(r"{tmp_path}/atexit").write_text("ran"))
print("buffered line", end="")
exit_now(3)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stdout == "buffered line"
    assert (tmp_path / "thread").read_text() == "done" and (tmp_path / "atexit").read_text() == "ran"
