"""Never lose a run: exact resume after SIGKILL, Ctrl-C/SIGTERM, NaN, out-of-memory, full disk, stuck workers,
untrusted and awkward files. Real subprocesses and real signals where the issue asks for them."""
import io
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
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

RESUMABLE = ["--data", "digits", "--model", "mlp", "--model-arg", "dropout=0.3", "--augment", "light",
             "--epochs", "3", "--batch-size", "64", "--deterministic", "--save-every-steps", "3",
             "--no-tensorboard", "-q", "--seed", "7"]


def cli(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dlkit.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
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


def test_resume_after_sigkill_mid_epoch_gives_bitwise_identical_weights(tmp_path):
    reference = tmp_path / "reference"
    proc = cli("train", *RESUMABLE, "--out", reference)
    assert proc.wait(300) == 0, proc.communicate()[1]

    killed = tmp_path / "killed"
    marker = tmp_path / "at-step-31"
    child = python(f"""
        import time, dlkit
        from dlkit.cli.main import main
        class Hang:  # step 31 is mid-epoch 2 (23 steps an epoch); the last save was at step 30
            def on_batch_end(self, trainer, batch_size, loss):
                if trainer.step == 31:
                    open({str(marker)!r}, "w").close()
                    time.sleep(600)
        import dlkit.api as api
        real = api.train
        api.train = lambda *a, **k: real(*a, callbacks=[Hang()], **k)
        main({["train", *RESUMABLE, "--out", str(killed)]!r})
    """)
    wait_for(marker, child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    meta = load_tensors(killed / "checkpoints" / "last.safetensors")[1]
    assert (meta["step"], meta["step_in_epoch"], meta["epoch"]) == (30, 7, 1)

    resumed = cli("train", "--resume", killed)
    assert resumed.wait(300) == 0, resumed.communicate()[1]
    ref, got = final_weights(reference), final_weights(killed)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert metrics(killed) == metrics(reference)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_saves_and_prints_the_resume_command(tmp_path, sig, code):
    run = tmp_path / "run"
    marker = tmp_path / "started"
    child = python(f"""
        import time, dlkit.api as api
        from dlkit.cli.main import main
        class Slow:
            def on_batch_end(self, trainer, batch_size, loss):
                if trainer.step == 5:
                    open({str(marker)!r}, "w").close()
                time.sleep(0.05)
        real = api.train
        api.train = lambda *a, **k: real(*a, callbacks=[Slow()], **k)
        raise SystemExit(main(["train", "--data", "digits", "--model", "softmax", "--epochs", "5",
                               "--batch-size", "32", "--out", {str(run)!r}, "--no-tensorboard"]))
    """)
    wait_for(marker, child)
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert f"resume with: dlkit train --resume {run}" in err and "Traceback" not in err
    meta = load_tensors(run / "checkpoints" / "last.safetensors")[1]
    assert meta["step"] >= 5 and meta["step_in_epoch"] > 0
    resumed = cli("train", "--resume", run)
    assert resumed.wait(120) == 0
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3, 4, 5]


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    dlkit.train(data="digits", model="mlp", epochs=1, out=str(run), tensorboard=False, quiet=True)
    good = (run / "checkpoints" / "last.safetensors").read_bytes()
    with pytest.raises(UserError, match="became nan.*lower --lr.*last good checkpoint is kept"):
        dlkit.train(resume=str(run), epochs=3, lr=1e30, quiet=True)
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == good


def test_skip_batch_policy_drops_only_the_bad_batch():
    from dlkit.training.loop import Inputs, StepParts, new_totals, train_one_epoch
    from dlkit.data.spec import PreprocessSpec

    model = dlkit.create_model("softmax", in_channels=1, num_classes=2, image_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def loss_fn(logits, labels):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) == 2 else loss

    spec = PreprocessSpec(4, 1, (0.5,), (0.5,), ("a", "b"))
    parts = StepParts(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), loss_fn, Inputs(spec),
                      torch.autograd.profiler.record_function.__class__ and (lambda: torch.no_grad().__class__()),
                      skip_nonfinite=True)
    parts.autocast = lambda: torch.enable_grad()
    batches = [(torch.randint(0, 255, (4, 1, 4, 4), dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))] * 3
    result = train_one_epoch(parts, batches, new_totals("cpu"), lambda n, loss: None)
    assert result["skipped"] == 1 and all(torch.isfinite(p).all() for p in model.parameters())


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


def test_deterministic_runs_repeat_exactly(tmp_path):
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_reader_survives_random_and_mutated_bytes(tmp_path, data):
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"w": torch.arange(10.0)}, {"model": "softmax"})
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["random", "flip", "truncate"]))
    if kind == "random":
        raw = bytearray(data.draw(st.binary(max_size=300)))
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    path.write_bytes(bytes(raw))
    try:
        load_tensors(path)
    except UserError:
        pass


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
