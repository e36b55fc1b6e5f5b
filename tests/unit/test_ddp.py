"""DDP through torchrun on the CPU, 2 gloo processes: the same weights as one process at the global batch, validation
over each sample once, resume after SIGTERM, two "nodes" on 127.0.0.1, a dying rank, and the refusals.

Every torchrun gets a free port (never 29500) and every wait a timeout. The data is 28 + 24 tiny PNGs of two classes:
41 training images (5 global batches of 8 and a last one of 1, so rank 1 steps on a weight-0 stand-in) and 11
validation images (the ranks validate 6 and 5).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import dlkit
from dlkit.cli.main import main as main_cli
from dlkit.errors import UserError
from dlkit.storage import load_tensors
from dlkit.training.distributed import free_port
from fakedata import make_class_folders

WAIT_S = 240  # generous: torch starts in ~3 s per process here, and the machine is shared


def train_args(folder: Path, out: Path, *extra) -> list[str]:
    return ["train", "--data", str(folder), "--image-size", "12", "--model", "lenet", "--optimizer", "sgd",
            "--lr", "0.5", "--epochs", "2", "--deterministic", "--seed", "5", "--no-tensorboard", "--no-report", "--out", str(out),
            *map(str, extra)]


def api_args(folder: Path, out: Path, batch_size: int) -> dict:
    return dict(data=str(folder), image_size=12, model="lenet", optimizer="sgd", lr=0.5, epochs=2, deterministic=True,
                seed=5, tensorboard=False, report=False, out=str(out), batch_size=batch_size, quiet=True)


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run(cmd: list[str], timeout: float = WAIT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = start(cmd, env)
    stdout, stderr = finish(proc, timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def torchrun(*args, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-addr",
            "127.0.0.1", "--master-port", str(free_port()), *map(str, args)]


def finish(proc: subprocess.Popen, timeout: float = WAIT_S) -> tuple[str, str]:
    """(stdout, stderr) of a torchrun that ends within `timeout`; one that does not is stopped (SIGTERM: torchrun
    stops its ranks) and the test fails, so no process outlives it."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=60)
        finally:
            proc.kill()
        pytest.fail(f"{' '.join(proc.args[:6])}... still running after {timeout:g}s")


def weights(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / "checkpoints" / f"{name}.safetensors")[0]


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = make_class_folders(tmp_path_factory.mktemp("ddp") / "data", per_class=28, size=12)
    for n in range(4):  # 28 cats and 24 dogs: 6 + 5 held out (val_split 0.2, per class), 22 + 19 to train on
        (root / "dog" / f"img {n}.png").unlink()
    return root


@pytest.fixture(scope="module")
def two_processes(folder, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`dlkit train --nproc-per-node 2` at 4 images per process, with TensorBoard and the report on."""
    out = tmp_path_factory.mktemp("runs") / "ddp"
    args = train_args(folder, out, "--batch-size", 4, "--nproc-per-node", 2)
    args = [a for a in args if a not in ("--no-tensorboard", "--no-report")]
    done = run([sys.executable, "-m", "dlkit", *args])
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_two_processes_end_with_the_weights_of_one_process_at_the_global_batch(two_processes, folder, tmp_path):
    # averaged gradients of two half batches are the full batch's gradient, the uneven last batch included
    ddp, _ = two_processes
    one = dlkit.train(**api_args(folder, tmp_path / "one", batch_size=8)).dir
    assert largest_difference(weights(ddp), weights(one)) < 1e-5
    assert metrics(ddp)[-1]["train_loss"] == pytest.approx(metrics(one)[-1]["train_loss"], abs=1e-6)
    # and the comparison means something: at batch 4 one process ends elsewhere
    small = dlkit.train(**api_args(folder, tmp_path / "small", batch_size=4)).dir
    assert largest_difference(weights(small), weights(one)) > 1e-3


def test_validation_counts_each_sample_once(two_processes):
    ddp, _ = two_processes
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["val_samples"] == 11 and summary["train_samples"] == 41  # odd: the ranks validate 6 and 5
    record = next(r for r in metrics(ddp) if r["epoch"] == summary["best_epoch"])
    alone = dlkit.evaluate(ddp)  # one process, the same (best) checkpoint, the whole split
    assert alone["samples"] == 11
    assert record["val_acc"] == alone["accuracy"]
    assert record["val_loss"] == pytest.approx(alone["loss"], abs=1e-5)
    report = json.loads((ddp / "eval" / "val_metrics.json").read_text())  # rank 0's report, from gathered outputs
    assert report["samples"] == 11 and report["accuracy"] == alone["accuracy"]


def test_rank_zero_alone_prints_and_writes(two_processes):
    ddp, done = two_processes
    assert done.stdout.count("epoch 1/2") == 1 and done.stdout.count("data: ") == 1
    assert "2 processes (DDP)" in done.stdout
    writers = {name.split(".")[-2] for name in os.listdir(ddp / "tb") if name.startswith("events.out.tfevents.")}
    assert len(writers) == 1  # event files named ...<host>.<pid>.<n>: one process wrote them all
    assert (ddp / "report.html").is_file()
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == [
        "best.safetensors", "last.safetensors", "last.state.safetensors"]
    # the single-process format: keys of the plain model, no DDP `module.` prefix
    assert not any(k.startswith("module.") for k in weights(ddp))
    assert (json.loads((ddp / "summary.json").read_text())["device"]).endswith("2 processes (DDP)")


PAUSING_TRAIN = """
import os, signal, sys, time
import dlkit.api as api
from dlkit.cli.main import main

mark, event_step, action = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Event:
    def on_batch_end(self, trainer, batch_size, loss):
        if trainer.step != event_step:
            return
        if action == "pause" and trainer.dist.is_main:  # wait here for the test's SIGTERM
            open(mark, "w").close()
            deadline = time.time() + 120
            while trainer._signal is None and time.time() < deadline:
                time.sleep(0.05)
        if action == "die" and trainer.dist.rank == 1:
            open(mark, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

real = api.train
api.train = lambda *a, **k: real(*a, callbacks=[Event()], **k)
sys.exit(main(sys.argv[4:]))
"""


def start_with_event(tmp_path: Path, event_step: int, action: str, args: list[str]) -> tuple[subprocess.Popen, Path]:
    script, mark = tmp_path / "event_train.py", tmp_path / f"{action}.mark"
    script.write_text(textwrap.dedent(PAUSING_TRAIN))
    return start(torchrun(script, mark, event_step, action, *args)), mark


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + WAIT_S
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if time.time() > deadline:
            finish(proc, 0.1)
        time.sleep(0.1)


RANK_HOOK = """
# sitecustomize for the ranks `dlkit train --nproc-per-node 2` starts: pause rank 0 at a step for the test's SIGTERM,
# and record what each rank trained and validated on (the sample indices of each of its batches, and their sizes)
import atexit, json, os, sys, time

if os.environ.get("DLKIT_TEST_RECORD") and "RANK" in os.environ:
    import dlkit.api as api
    from dlkit.data import loaders

    record, pause_at = os.environ["DLKIT_TEST_RECORD"], int(os.environ.get("DLKIT_TEST_PAUSE_AT", "0"))
    stall_at = int(os.environ.get("DLKIT_TEST_STALL_AT", "0"))  # rank 1 stops answering there, alive
    seen = {"train": [], "val": [], "batch_sizes": []}
    real_pieces = loaders.Shard.pieces

    def pieces(self, order, batch, first_step=0):
        for idx, weight in real_pieces(self, order, batch, first_step):
            seen["val" if self.evaluation else "train"].append([idx.tolist(), weight])
            yield idx, weight

    class Event:
        def on_batch_end(self, trainer, batch_size, loss):
            seen["batch_sizes"].append(batch_size)
            if trainer.step == stall_at and trainer.dist.rank == 1:  # until torchrun's SIGTERM, after rank 0 gave up
                deadline = time.time() + 600
                while trainer._signal is None and time.time() < deadline:
                    time.sleep(0.05)
            if trainer.step == pause_at and trainer.dist.is_main:  # wait here for the test's SIGTERM
                open(record + ".paused", "w").close()
                deadline = time.time() + 120
                while trainer._signal is None and time.time() < deadline:
                    time.sleep(0.05)

    loaders.Shard.pieces = pieces
    real = api.train
    api.train = lambda *a, **k: real(*a, callbacks=[Event()], **k)
    atexit.register(lambda: open(f"{record}.rank{os.environ['RANK']}.json", "w").write(json.dumps(seen)))
"""


def hooked(tmp_path: Path, record: Path, pause_at: int = 0) -> dict:
    (tmp_path / "hook").mkdir(exist_ok=True)
    (tmp_path / "hook" / "sitecustomize.py").write_text(textwrap.dedent(RANK_HOOK))
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH", "")]),
            "DLKIT_TEST_RECORD": str(record), "DLKIT_TEST_PAUSE_AT": str(pause_at)}


def test_sigterm_saves_once_and_the_resumed_run_matches_the_uninterrupted_one(two_processes, folder, tmp_path):
    out, dlkit_train = tmp_path / "run", [sys.executable, "-m", "dlkit"]
    first = tmp_path / "first"
    proc = start(dlkit_train + train_args(folder, out, "--batch-size", 4, "--nproc-per-node", 2),
                 hooked(tmp_path, first, pause_at=3))  # step 3 of the first epoch's 6
    wait_for(Path(f"{first}.paused"), proc)
    proc.send_signal(signal.SIGTERM)  # dlkit passes it to torchrun, which passes it to every rank
    _, stderr = finish(proc)
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM, as one process exits
    assert stderr.count("interrupted: SIGTERM at step 3") == 1, stderr[-3000:]  # rank 0 speaks, once
    assert load_tensors(out / "checkpoints" / "last.state.safetensors")[1]["step"] == 3
    # a different number of processes cannot continue it exactly: a clear refusal
    with pytest.raises(UserError, match="trained by 2 process"):
        dlkit.train(resume=out, nproc_per_node=1, quiet=True)
    resumed = tmp_path / "resumed"
    done = run(dlkit_train + ["train", "--resume", out, "--nproc-per-node", 2, "-q"], env=hooked(tmp_path, resumed))
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted, _ = two_processes
    assert largest_difference(weights(out), weights(uninterrupted)) < 1e-6
    for resumed_epoch, straight in zip(metrics(out), metrics(uninterrupted), strict=True):  # the cut epoch's totals too
        assert resumed_epoch["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-6)
        assert resumed_epoch["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-6)
    check_each_rank_took_its_own_part(resumed)


def check_each_rank_took_its_own_part(record: Path) -> None:
    """What the ranks of the resumed run fed their models: epoch 1 from step 4 on (steps 4-6), then all of epoch 2."""
    ranks = [json.loads(Path(f"{record}.rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert len(rank["train"]) == 3 + 6 and rank["batch_sizes"] == [len(idx) if w else 0 for idx, w in rank["train"]]
    epoch_2 = [[idx for idx, weight in rank["train"][3:] if weight] for rank in ranks]  # weight 0: a stand-in
    assert [len(batch) for batch in epoch_2[0]] == [4] * 5 + [1] and [len(b) for b in epoch_2[1]] == [4] * 5
    mine = [sorted(i for batch in batches for i in batch) for batches in epoch_2]
    assert not set(mine[0]) & set(mine[1]) and sorted(mine[0] + mine[1]) == list(range(41))  # disjoint, every one
    assert ranks[1]["train"][-1][1] == 0.0  # the last global batch of 1: rank 1 stepped on a stand-in, adding nothing
    validated = [sorted({i for idx, _ in rank["val"] for i in idx}) for rank in ranks]
    assert validated == [list(range(6)), list(range(6, 11))]  # contiguous chunks of the 11, without padding
    assert [sum(len(idx) for idx, _ in rank["val"]) for rank in ranks] == [2 * 6, 2 * 5]  # each of the 2 epochs


def test_the_ranks_agree_on_val_every_patience_and_stop_at_and_stop_where_one_process_does(folder, tmp_path):
    # rank 0 alone holds the gathered validation metrics: were a rank to decide by itself, the job would hang
    flags = ["--val-every", 2, "--monitor", "val_loss", "--stop-at", 0.7, "--patience", 5, "--epochs", 4]
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    done = run([sys.executable, "-m", "dlkit", *train_args(folder, ddp, "--batch-size", 4, "--nproc-per-node", 2,
                                                           *flags)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert main_cli(train_args(folder, one, "--batch-size", 8, *flags, "-q")) == 0
    got, want = metrics(ddp), metrics(one)
    # validated every 2 steps; stopped at 8, whose cut epoch is closed by a record of its own
    assert [r["step"] for r in got] == [r["step"] for r in want] == [2, 4, 6, 8, 8]
    assert [r["val_loss"] for r in got] == pytest.approx([r["val_loss"] for r in want], abs=1e-5)
    stopped = [json.loads((d / "summary.json").read_text())["stopped"] for d in (ddp, one)]
    assert stopped[0]["step"] == stopped[1]["step"] == 8 and "0.7" in stopped[0]["reason"], stopped


def test_a_rank_that_stops_answering_fails_the_job_after_dlkit_ddp_timeout(folder, tmp_path):
    env = {**hooked(tmp_path, tmp_path / "stalled"), "DLKIT_TEST_STALL_AT": "2", "DLKIT_DDP_TIMEOUT": "3"}
    args = train_args(folder, tmp_path / "run", "--batch-size", 4, "--nproc-per-node", 2)
    done = run([sys.executable, "-m", "dlkit", *args], timeout=120, env=env)  # rank 1 would wait 600 s
    assert done.returncode == 1, done.stderr[-3000:]
    assert "error: rank 0: another process of this job stopped or stopped answering" in done.stderr, done.stderr[-3000:]


def test_two_nodes_streaming_files_train_and_save_as_one_process_would(folder, tmp_path):
    # 2 x 1 process meeting through torchrun's c10d rendezvous on 127.0.0.1, reading the images through the
    # DataLoader path (--cache off, a worker each) that shards with the same global-batch slices
    out, port = tmp_path / "run", free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend",
            "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "dlkit-test", "-m", "dlkit",
            *train_args(folder, out, "--batch-size", 4, "--cache", "off", "--workers", 1), "-q"]
    nodes = [start(node) for _ in "ab"]
    for proc in nodes:
        _, stderr = finish(proc)
        assert proc.returncode == 0, stderr[-3000:]
    one = dlkit.train(**api_args(folder, tmp_path / "one", batch_size=8), cache="off", workers=0).dir
    assert largest_difference(weights(out), weights(one)) < 1e-5
    assert metrics(out)[-1]["val_acc"] == metrics(one)[-1]["val_acc"]


def test_a_dying_rank_takes_the_job_down(folder, tmp_path):
    proc, mark = start_with_event(tmp_path, 2, "die", train_args(folder, tmp_path / "run", "--batch-size", 4))
    _, stderr = finish(proc)  # not a hang: torchrun stops the other rank
    assert mark.exists() and proc.returncode != 0
    assert "SIGKILL" in stderr or "Signal 9" in stderr, stderr[-3000:]


def test_sync_bn_on_the_cpu_is_refused_before_any_process_starts(tmp_path):
    done = run([sys.executable, "-m", "dlkit", "train", "--nproc-per-node", "2", "--sync-bn", "--device", "cpu",
                "--out", str(tmp_path / "run")], timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --sync-bn needs CUDA: PyTorch has no SyncBatchNorm on cpu; drop --sync-bn (each process then "
        "normalises with its own batch's statistics)"]
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="--sync-bn needs CUDA"):  # torchrun started dlkit itself: the same refusal
        dlkit.train(sync_bn=True, device="cpu", quiet=True, out=str(tmp_path / "run"))


def test_more_processes_without_a_launcher_is_refused(tmp_path):
    with pytest.raises(UserError, match="torchrun --nproc-per-node 2"):
        dlkit.train(nproc_per_node=2, quiet=True, out=str(tmp_path / "run"))
