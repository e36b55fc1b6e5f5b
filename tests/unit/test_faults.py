"""Never lose a run: exact resume after SIGKILL, Ctrl-C/SIGTERM, NaN, out-of-memory, full disk, stuck workers,
untrusted and awkward files. Real subprocesses and real signals where the issue asks for them."""
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlkit
from dlkit.errors import UserError
from dlkit.training import batchsize
from dlkit.storage import load_tensors, save_tensors
from fakedata import make_class_folders

RESUMABLE = ["--model", "mlp", "--model-arg", "dropout=0.3", "--epochs", "3", "--deterministic",
             "--save-every-steps", "3", "--no-tensorboard", "--no-report", "-q", "--seed", "7"]
IN_MEMORY = ["--data", "digits", "--batch-size", "64"]  # 23 steps an epoch
STREAMED = ["--data", "{folder}", "--image-size", "12", "--cache", "off", "--workers", "1", "--batch-size", "4"]  # 8

# A `dlkit train` that writes down every step it runs (one number a line) and, at step HANG_AT, stops there (within
# the step) for the test to SIGKILL it, or until a signal it catches arrives: argv is LOG HANG_AT TRAIN_ARGS...
STEP_LOGGING_TRAIN = """
import sys, time
import dlkit.api as api
from dlkit.cli.main import main

log, hang_at = sys.argv[1], int(sys.argv[2])

class StepLog:
    def on_batch_end(self, trainer, batch_size, loss):
        with open(log, "a") as f:
            f.write(f"{trainer.step}\\n")
        if trainer.step == hang_at:
            open(log + ".hung", "w").close()
            deadline = time.time() + 600
            while trainer._signal is None and time.time() < deadline:
                time.sleep(0.02)

real = api.train
api.train = lambda *a, **k: real(*a, callbacks=[StepLog()], **k)
sys.exit(main(sys.argv[3:]))
"""


def step_logging_train(log: Path, hang_at: int, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", STEP_LOGGING_TRAIN, str(log), str(hang_at), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def steps_run(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()]


def cli(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dlkit.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out waiting for the child"
        time.sleep(0.05)


def final_weights(run: Path) -> dict:
    return load_tensors(run / "checkpoints" / "last.safetensors")[0]


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "epoch_s")} for r in rows]


@pytest.mark.parametrize("data,augment,hang_at,saved", [
    (IN_MEMORY, "light", 31, (30, 7, 1)),      # step 31 is mid-epoch 2; the last save was at step 30
    (IN_MEMORY, "standard", 31, (30, 7, 1)),
    (STREAMED, "standard", 13, (12, 4, 1)),    # the DataLoader path, a worker decoding and augmenting
], ids=["in-memory-light", "in-memory-standard", "dataloader-standard"])
def test_a_resume_after_sigkill_runs_only_the_remaining_steps_and_ends_bitwise_identical(
        tmp_path, data, augment, hang_at, saved):
    folder = make_class_folders(tmp_path / "pets", per_class=20)
    args = [a.format(folder=folder) for a in data] + RESUMABLE + ["--augment", augment]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # both at once: the runs share nothing but the machine, and deterministic kernels do not care about its load
    uninterrupted = step_logging_train(tmp_path / "reference.log", 0, "train", *args, "--out", reference)
    child = step_logging_train(tmp_path / "killed.log", hang_at, "train", *args, "--out", killed)
    wait_for(tmp_path / "killed.log.hung", child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert uninterrupted.wait(300) == 0, uninterrupted.communicate()[1][-2000:]
    meta = load_tensors(killed / "checkpoints" / "last.safetensors")[1]
    assert (meta["step"], meta["step_in_epoch"], meta["epoch"]) == saved

    resumed = step_logging_train(tmp_path / "resumed.log", 0, "train", "--resume", killed)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    step, step_in_epoch, epoch = saved
    assert f"after step {step_in_epoch} of epoch {epoch + 1} (global step {step})" in out
    total = len(steps_run(tmp_path / "reference.log"))
    assert steps_run(tmp_path / "resumed.log") == list(range(step + 1, total + 1))  # a restart would run them all
    ref, got = final_weights(reference), final_weights(killed)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert metrics(killed) == metrics(reference)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_saves_and_prints_the_resume_command(tmp_path, sig, code):
    args = ["train", "--data", "digits", "--model", "softmax", "--epochs", "2", "--batch-size", "32", "--seed", "3",
            "--deterministic", "--no-tensorboard", "--no-report"]
    run, reference, log = tmp_path / "run", tmp_path / "reference", tmp_path / "signalled.log"
    uninterrupted = step_logging_train(tmp_path / "reference.log", 0, *args, "--out", reference)
    child = step_logging_train(log, 5, *args, "--out", run)
    wait_for(tmp_path / "signalled.log.hung", child)  # inside step 5
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert f"resume with: dlkit train --resume {run}" in err and "Traceback" not in err
    # the step in flight finished and was saved; no step after it ran
    meta = load_tensors(run / "checkpoints" / "last.safetensors")[1]
    assert (meta["step"], meta["step_in_epoch"], meta["epoch"]) == (5, 5, 0) and steps_run(log) == [1, 2, 3, 4, 5]
    resumed = step_logging_train(tmp_path / "resumed.log", 0, "train", "--resume", run)
    assert resumed.wait(120) == 0, resumed.communicate()[1][-2000:]
    assert uninterrupted.wait(120) == 0, uninterrupted.communicate()[1][-2000:]
    total = len(steps_run(tmp_path / "reference.log"))
    assert steps_run(tmp_path / "resumed.log") == list(range(6, total + 1))  # a restart would run them all
    ref, got = final_weights(reference), final_weights(run)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert [r["epoch"] for r in metrics(run)] == [1, 2] and metrics(run) == metrics(reference)


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    dlkit.train(data="digits", model="mlp", epochs=1, out=str(run), tensorboard=False, quiet=True)
    good = (run / "checkpoints" / "last.safetensors").read_bytes()
    with pytest.raises(UserError, match="became nan.*lower --lr.*last good checkpoint is kept"):
        dlkit.train(resume=str(run), epochs=3, lr=1e30, quiet=True)
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == good


def test_skip_batch_drops_the_bad_batch_and_applies_the_good_ones_around_it():
    import contextlib
    import copy

    import torch.nn.functional as F

    from dlkit.data.spec import PreprocessSpec
    from dlkit.training.loop import Inputs, StepParts, new_totals, train_one_epoch

    torch.manual_seed(0)
    model = dlkit.create_model("softmax", in_channels=1, num_classes=2, image_size=4)
    initial, by_hand = copy.deepcopy(model), copy.deepcopy(model)
    batches = [(torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 0, 1])) for _ in range(3)]
    inputs = Inputs(PreprocessSpec(4, 1, (0.5,), (0.5,), ("a", "b")))
    calls = []

    def loss_fn(logits, labels):  # the second batch's loss is NaN, as a bad sample would make it
        calls.append(1)
        loss = F.cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) == 2 else loss

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = StepParts(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0), loss_fn, inputs,
                      contextlib.nullcontext, skip_nonfinite=True)
    result = train_one_epoch(parts, batches, new_totals("cpu"), lambda n, loss: None)

    hand_opt = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    for images, labels in (batches[0], batches[2]):  # the good batches, in order, and nothing else
        hand_opt.zero_grad()
        F.cross_entropy(by_hand(inputs(images, train=True)), labels).backward()
        hand_opt.step()
    assert result["skipped"] == 1 and result["count"] == 8
    for got, want, start in zip(model.parameters(), by_hand.parameters(), initial.parameters()):
        assert not torch.equal(want, start)  # two real updates, so matching them means something
        torch.testing.assert_close(got, want)


def test_batch_size_auto_finds_the_largest_that_fits(monkeypatch, tmp_path):
    real = batchsize.trial_step

    def limited(model, batch):
        if len(batch) > 64:
            raise batchsize.OutOfMemory("CUDA out of memory (injected)")
        real(model, batch)

    monkeypatch.setattr(batchsize, "trial_step", limited)
    run = dlkit.train(data="digits", model="lenet-modern", batch_size="auto", epochs=1, out=str(tmp_path / "r"),
                      tensorboard=False, quiet=True)
    assert "batch_size: 64" in (run.dir / "config.yaml").read_text()


def test_out_of_memory_in_training_names_a_smaller_batch(monkeypatch, tmp_path):
    from dlkit.training import trainer

    def oom(*args, **kwargs):
        raise batchsize.OutOfMemory("CUDA out of memory (injected)")

    monkeypatch.setattr(trainer, "train_one_epoch", oom)
    with pytest.raises(UserError, match="out of memory at batch size 128.*--batch-size 64 or --batch-size auto"):
        dlkit.train(data="digits", epochs=1, out=str(tmp_path / "r"), tensorboard=False, quiet=True)


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    dlkit.train(data="digits", model="lenet-modern", epochs=1, out=str(run), tensorboard=False, quiet=True)
    before = (run / "checkpoints" / "last.safetensors").read_bytes()

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))  # configs fit, checkpoints (~90 kB) do not

    proc = cli("train", "--resume", run, "--epochs", "2", preexec_fn=small_files)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err
    assert "could not write" in err and "the previous file is intact" in err
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == before
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_checkpoints_reach_the_disk_before_they_replace_the_old_one_and_the_metrics_file_skips_the_wait(
        tmp_path, monkeypatch):
    """fsync before the rename: after a power cut the checkpoint is the old one or the new one, never empty. The
    per-epoch metrics.jsonl is only renamed into place (its history is in the checkpoint, rewritten on resume)."""
    from dlkit.track.rundir import MetricsFile

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    save_tensors(tmp_path / "w.safetensors", {"w": torch.ones(3)}, {"model": "x"})
    assert len(synced) == 2  # the file, then its folder (the rename)
    synced.clear()
    trainer = type("T", (), {"history": [{"epoch": 1, "val_acc": 0.5}]})()
    MetricsFile(tmp_path).on_epoch_end(trainer, {})
    assert synced == [] and json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "val_acc": 0.5}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_stuck_dataloader_worker_fails_fast(tmp_path, monkeypatch):
    from dlkit.data import loaders, open_source

    folder = make_class_folders(tmp_path / "pets", per_class=4)
    source = open_source(str(folder))
    monkeypatch.setattr(loaders, "load_image", lambda *a, **k: time.sleep(60))
    batches = loaders.FileBatches(source.train, 3, 8, 2, True, torch.device("cpu"), workers=1, timeout=1)
    started = time.time()
    with pytest.raises(UserError, match="produced no batch for 1s"):
        next(iter(batches))
    assert time.time() - started < 30


@pytest.fixture
def determinism_restored():
    """--deterministic in-process leaves torch strict: later tests must not inherit it."""
    yield
    torch.use_deterministic_algorithms(False)


def test_deterministic_runs_repeat_exactly(tmp_path, determinism_restored):
    runs = [dlkit.train(data="digits", model="mlp", epochs=2, seed=5, deterministic=True, augment="standard",
                        out=str(tmp_path / f"r{i}"), tensorboard=False, quiet=True) for i in range(2)]
    assert metrics(runs[0].dir) == metrics(runs[1].dir)


def test_resume_weights_only_starts_a_new_run_from_old_weights(tmp_path):
    from dlkit.config import make_config
    from dlkit.training.trainer import Trainer

    first = dlkit.train(data="digits", model="mlp", epochs=1, out=str(tmp_path / "a"), tensorboard=False, quiet=True)
    cfg = make_config({"data": "digits", "model": "mlp", "init_from": str(first.dir), "out": str(tmp_path / "b"),
                       "tensorboard": False})
    trainer = Trainer(cfg).setup()
    old = final_weights(first.dir)
    assert all(torch.equal(old[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.epoch == 0 and trainer.run_dir == tmp_path / "b"


def test_resume_with_other_data_is_refused(tmp_path):
    folder = make_class_folders(tmp_path / "pets")
    run = dlkit.train(data="digits", model="softmax", epochs=1, out=str(tmp_path / "r"), tensorboard=False, quiet=True)
    with pytest.raises(UserError, match="its data and classes differ.*--resume-weights-only"):
        dlkit.train(resume=str(run.dir), data=str(folder), image_size=8, channels=1, epochs=2, quiet=True)


def test_resume_refuses_another_optimizer_and_applies_a_new_weight_decay(tmp_path):
    import shutil

    from dlkit.storage import unflatten_state

    first = dlkit.train(data="digits", model="mlp", optimizer="sgd", lr=0.1, epochs=1, out=str(tmp_path / "run"),
                        tensorboard=False, report=False, quiet=True)
    with pytest.raises(UserError, match="its optimizer differ.*--resume-weights-only"):
        dlkit.train(resume=str(first.dir), optimizer="adamw", epochs=2, quiet=True)
    kept, decayed = tmp_path / "kept", tmp_path / "decayed"
    shutil.copytree(first.dir, kept)
    shutil.copytree(first.dir, decayed)
    dlkit.train(resume=str(kept), epochs=2, quiet=True)
    dlkit.train(resume=str(decayed), epochs=2, weight_decay=0.5, quiet=True)

    tensors, meta = load_tensors(decayed / "checkpoints" / "last.state.safetensors")
    optimizer = unflatten_state(meta["state"], tensors)["optimizer"]
    assert {group["weight_decay"] for group in optimizer["param_groups"]} == {0.5}
    assert "weight_decay: 0.5" in (decayed / "config.yaml").read_text()
    # applied, not only recorded: from the same state and batches, each of the epoch's 23 steps also shrinks the
    # weights by lr x 0.5 = 5%, so they end clearly smaller
    norm = {run: sum(float(w.norm() ** 2) for w in final_weights(run).values()) ** 0.5 for run in (kept, decayed)}
    assert norm[decayed] < 0.8 * norm[kept]


FUZZED_META = {"model": "softmax", "spec": {"image_size": 4, "mean": [0.5], "class_names": ["cat", "dog"]}}


def refused_or_intact(path: Path, raw: bytes, saved: tuple) -> bool:
    """Whether a damaged file is refused with a one-line UserError, or loads exactly what was saved (a flip in the
    header's padding, say, damages nothing). Any other exception fails the test by propagating."""
    path.write_bytes(raw)
    try:
        tensors, meta = load_tensors(path)
    except UserError:
        return True
    return meta == saved[1] and tensors.keys() == saved[0].keys() and all(
        torch.equal(tensors[k], saved[0][k]) for k in tensors)


@pytest.fixture
def fuzzed_checkpoint(tmp_path):
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"w": torch.arange(10.0), "b": torch.ones(2)}, FUZZED_META)
    return path, path.read_bytes(), load_tensors(path)


def test_every_single_bit_flip_of_a_checkpoint_is_refused_or_harmless(fuzzed_checkpoint):
    path, raw, saved = fuzzed_checkpoint
    accepted = []
    for i in range(len(raw)):
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[i] ^= 1 << bit
            if not refused_or_intact(path, bytes(damaged), saved):
                accepted.append((i, bit, raw[i:i + 1]))
    assert not accepted, f"damaged files loaded with other content: (offset, bit, byte) {accepted[:10]}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_damaged_checkpoint_is_refused(fuzzed_checkpoint, data):
    path, raw, saved = fuzzed_checkpoint
    kind = data.draw(st.sampled_from(["random", "flips", "truncate", "append"]))
    damaged = bytearray(raw)
    if kind == "random":
        damaged = bytearray(data.draw(st.binary(max_size=400).filter(lambda b: b != raw)))
    elif kind == "flips":
        for _ in range(data.draw(st.integers(2, 6))):
            damaged[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        damaged = damaged[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        damaged += data.draw(st.binary(min_size=1, max_size=64))
    if kind in ("random", "truncate"):  # these can never load what was saved
        path.write_bytes(bytes(damaged))
        with pytest.raises(UserError):
            load_tensors(path)
    else:
        assert refused_or_intact(path, bytes(damaged), saved)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 65-byte PNG whose header claims width x height pixels: a decompression bomb's signature without its bulk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


BOMB_SIDE = 13_400  # 179.6 megapixels: just over twice Pillow's default limit of 89.5, where it refuses


@pytest.fixture
def restore_pillow_limit(monkeypatch):
    """In-process runs with --max-image-pixels change Pillow's global: give the old value back afterwards."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def test_awkward_images_end_in_a_prediction_or_a_one_line_error(tmp_path, restore_pillow_limit, capsys):
    from PIL import Image

    from dlkit.cli.main import main

    run = dlkit.train(data="digits", model="softmax", epochs=1, out=str(tmp_path / "r"), tensorboard=False, quiet=True)
    d = tmp_path / "inbox"
    d.mkdir()
    Image.new("CMYK", (9, 7), (0, 0, 0, 0)).save(d / "cmyk.jpg")
    Image.fromarray(__import__("numpy").full((8, 8), 40000, dtype="uint16")).save(d / "deep.png")
    Image.new("P", (5, 5), 3).save(d / "palette.png")
    rotated = Image.new("RGB", (10, 6), "white")
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(d / "rotated.jpg", exif=exif)
    Image.new("RGB", (30, 30), "gray").save(d / "whole.jpg")
    (d / "truncated.jpg").write_bytes((d / "whole.jpg").read_bytes()[:100])
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("hello")
    png_claiming(d / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    # a fresh process: Pillow's real default limit, not one an earlier test set
    proc = subprocess.run([sys.executable, "-m", "dlkit.cli.main", "predict", str(run.dir), str(d)],
                          capture_output=True, text=True)
    predicted = {Path(line.split(":")[0]).name for line in proc.stdout.splitlines()}
    errors = proc.stderr.splitlines()
    assert predicted == {"cmyk.jpg", "deep.png", "palette.png", "rotated.jpg", "whole.jpg"}
    assert proc.returncode == 2 and len(errors) == 4 and all(e.startswith("error: ") for e in errors)
    assert any("bomb.png" in e and "image too large" in e and "--max-image-pixels" in e for e in errors)

    # --max-image-pixels raises the limit (the bomb now fails as the truncated file it is) ...
    assert main(["predict", str(run.dir), str(d / "bomb.png"), "--max-image-pixels", str(BOMB_SIDE ** 2)]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "too large" not in err
    # ... and lowers it (a 30x30 image is over twice 400 pixels)
    assert main(["predict", str(run.dir), str(d / "whole.jpg"), "--max-image-pixels", "400"]) == 2
    assert "whole.jpg: image too large" in capsys.readouterr().err


def test_the_default_bomb_limit_lists_and_skips_a_huge_image_in_training(tmp_path, restore_pillow_limit):
    folder = make_class_folders(tmp_path / "pets", per_class=6)
    png_claiming(folder / "cat" / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    run = tmp_path / "run"
    proc = cli("train", "--data", folder, "--model", "mlp", "--image-size", 12, "--epochs", 1, "--batch-size", 4,
               "--out", run, "--no-tensorboard", "--no-report")  # a fresh process: Pillow's real default limit
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    skipped = [line for line in out.splitlines() if "skipped 1 unreadable image(s)" in line]
    assert len(skipped) == 1 and "bomb.png: image too large" in skipped[0] and "--max-image-pixels" in skipped[0]

    # --max-image-pixels reaches Pillow, and the decoded-image cache written above does not replay the verdict
    # made under the default limit: the bomb is now refused as the truncated file it is
    log = io.StringIO()
    dlkit.train(data=str(folder), model="mlp", image_size=12, epochs=1, batch_size=4, log=log,
                max_image_pixels=BOMB_SIDE ** 2, out=str(tmp_path / "raised"), tensorboard=False, report=False)
    skipped = [line for line in log.getvalue().splitlines() if "skipped 1 unreadable image(s)" in line]
    assert len(skipped) == 1 and "bomb.png: cannot read image" in skipped[0] and "too large" not in skipped[0]


def test_eval_takes_max_image_pixels(tmp_path, restore_pillow_limit, capsys):
    from PIL import Image

    from dlkit.cli.main import main

    data = tmp_path / "data"
    make_class_folders(data / "train", per_class=4)
    make_class_folders(data / "val", per_class=2)
    Image.new("RGB", (24, 24), "gray").save(data / "val" / "cat" / "big.png")  # 576 pixels: over twice 200
    run = dlkit.train(data=str(data), model="mlp", image_size=12, epochs=1, batch_size=4, quiet=True,
                      out=str(tmp_path / "run"), tensorboard=False, report=False)
    assert main(["eval", str(run.dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 5
    assert main(["eval", str(run.dir), "--json", "--max-image-pixels", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 4 and any("big.png: image too large" in note for note in result["notes"])


def test_csv_paths_outside_the_root_need_the_flag(tmp_path):
    from PIL import Image

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for i in range(6):
        Image.new("L", (4, 4), 40 * i).save(outside / f"{i}.png")
    manifest = tmp_path / "data" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("".join(f"../elsewhere/{i}.png,{'ab'[i % 2]}\n" for i in range(6)))
    with pytest.raises(UserError, match="outside the manifest's folder"):
        dlkit.train(data=str(manifest), epochs=1, quiet=True, out=str(tmp_path / "r1"))
    run = dlkit.train(data=str(manifest), allow_outside_root=True, model="softmax", image_size=4, epochs=1,
                      quiet=True, out=str(tmp_path / "r2"), tensorboard=False)
    assert run.summary["epochs"] == 1
