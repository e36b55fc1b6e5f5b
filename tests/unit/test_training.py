"""Training internals: both data paths, augmentation, schedules, losses, optimizers, early stopping, built-in errors."""
import ctypes
import math
import os
import platform
import subprocess
import sys

import pytest
import torch

import dlkit
from dlkit.config import make_config
from dlkit.errors import UserError
from dlkit.device import native_bf16_cpu
from dlkit.training.optim import LOSSES, OPTIMIZERS, SCHEDULES, lr_multiplier

from fakedata import make_class_folders


@pytest.fixture
def folder(tmp_path):
    return make_class_folders(tmp_path / "pets", per_class=8)


@pytest.fixture
def two_threads():
    """torch at 2 CPU threads for the test, the process's own count given back after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cache,augment", [("ram", "standard"), ("off", "standard"), ("off", "none")])
def test_both_data_paths_train_with_augmentation(folder, tmp_path, cache, augment):
    run = dlkit.train(data=str(folder), model="quick", image_size=16, cache=cache, augment=augment, workers=0,
                      epochs=2, batch_size=4, out=str(tmp_path / "run"), tensorboard=False, quiet=True)
    assert len(run.history) == 2 and all(math.isfinite(r["train_loss"]) for r in run.history)


def test_streamed_and_in_memory_paths_give_the_same_evaluation(folder, tmp_path):
    run = dlkit.train(data=str(folder), model="mlp", image_size=12, epochs=1, batch_size=4,
                      out=str(tmp_path / "run"), tensorboard=False, quiet=True)
    from dlkit.data import make_batches, open_source, prepare_split
    from dlkit.data.transforms import Inputs
    from dlkit.infer.logits import predict_logits

    predictor = run.load()
    source = open_source(str(folder))
    results = []
    for cache in ("ram", "off"):
        samples, _ = prepare_split(source.val, predictor.spec, cache)
        batches = make_batches(samples, predictor.spec, 3, False, torch.device("cpu"), workers=0)
        results.append(predict_logits(predictor.model, batches, Inputs(predictor.spec)))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_every_loss_and_optimizer_makes_a_step():
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1])
    for entry in LOSSES:
        loss = entry.obj(label_smoothing=0.1)(logits, labels)
        assert loss.ndim == 0 and loss.item() >= 0
    for entry in OPTIMIZERS:
        cfg = make_config({"optimizer": entry.name, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4})
        w = torch.nn.Parameter(torch.ones(3))
        # a grouped optimizer (muon) splits a model's parameters itself, so it is handed a module
        opt = entry.obj(torch.nn.ParameterList([w]) if entry.info.get("grouped") else [w], cfg)
        (w ** 2).sum().backward()
        opt.step()
        assert (w < 1).all(), entry.name


def test_losses_match_a_hand_computation():
    logits, labels = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    right = [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-2))]  # each row's softmax of its label: sigmoid(margin)
    smoothing = 0.2  # over 2 classes: the label gets 1 - 0.2/2 of the target, the other class 0.2/2
    expected = {
        ("cross-entropy", 0.0): sum(-math.log(p) for p in right) / 2,
        ("cross-entropy", smoothing): sum(-(1 - smoothing / 2) * math.log(p) - smoothing / 2 * math.log(1 - p)
                                          for p in right) / 2,
        # on probabilities against one-hot, averaged over all 4 entries: each row misses by (1 - p) twice
        ("mse", 0.0): sum(2 * (1 - p) ** 2 for p in right) / 4,
        ("l1", 0.0): sum(2 * (1 - p) for p in right) / 4,
        ("huber", 0.0): sum(2 * 0.5 * (1 - p) ** 2 for p in right) / 4,  # every miss is under huber's delta of 1
    }
    for (name, label_smoothing), value in expected.items():
        loss = LOSSES.get(name)(label_smoothing=label_smoothing)(logits, labels)
        assert loss.item() == pytest.approx(value, rel=1e-6), name


def test_schedules_warm_up_then_follow_their_shape():
    for entry in SCHEDULES:
        f = lr_multiplier(entry.name, total_steps=100, warmup_steps=10)
        assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    cosine = lr_multiplier("cosine", 100, 0)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    step = lr_multiplier("step", 90, 0)
    assert (step(10), step(40), step(80)) == (1.0, pytest.approx(0.1), pytest.approx(0.01))


def test_early_stopping_stops_after_patience(tmp_path):
    run = dlkit.train(data="digits", model="softmax", epochs=30, lr=1e-6, patience=2,
                      out=str(tmp_path / "run"), tensorboard=False, quiet=True)
    assert len(run.history) < 30
    assert run.history[-1]["epoch"] - run.summary["best_epoch"] == 2


def test_a_diverging_loss_stops_with_advice(tmp_path):
    with pytest.raises(UserError, match="lower --lr"):
        dlkit.train(data="digits", model="mlp", optimizer="sgd", lr=1e30, epochs=2,
                    out=str(tmp_path / "run"), tensorboard=False, quiet=True)


def test_missing_builtin_files_offline_name_what_to_put_where_and_why(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):  # what torchvision raises when every mirror fails
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\n"
                           "<urlopen error [Errno -3] Temporary failure in name resolution>\n")

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    with pytest.raises(UserError, match=r"download failed \(.*Temporary failure in name resolution.*"
                                        r"train-images-idx3-ubyte.gz.*--data-dir"):
        dlkit.train(data="fashion-mnist", data_dir=str(tmp_path), epochs=1, quiet=True)


def test_a_full_disk_while_fetching_a_builtin_is_not_called_a_failed_download(tmp_path, monkeypatch):
    import errno

    import torchvision.datasets as tvd

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "raw" / "train-images-idx3-ubyte"))

    monkeypatch.setattr(tvd, "FashionMNIST", full_disk)
    with pytest.raises(UserError) as refused:
        dlkit.train(data="fashion-mnist", data_dir=str(tmp_path), epochs=1, quiet=True)
    message = str(refused.value)
    assert "No space left on device" in message and "train-images-idx3-ubyte" in message
    assert "download failed" not in message and "free space" in message


def drop_root_override():
    """preexec_fn: root writes into read-only folders (CAP_DAC_OVERRIDE); take that power from the child, so a
    read-only folder is as read-only to it as to any other user. A no-op for other users."""
    if os.geteuid() != 0:
        return
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):  # dropped from the bounding set: gone after exec
        if prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.mark.skipif(sys.platform != "linux", reason="drops root's override with Linux's prctl")
def test_a_read_only_disk_cache_costs_one_note_not_the_run(folder, tmp_path):
    cache = tmp_path / "read-only-cache"
    cache.mkdir()
    cache.chmod(0o555)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "dlkit.cli.main", "train", "--data", str(folder), "--model", "mlp",
                           "--image-size", "12", "--epochs", "1", "--batch-size", "4", "--out", str(run),
                           "--no-tensorboard", "--no-report"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DLKIT_CACHE_DIR": str(cache)}, preexec_fn=drop_root_override)
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [line for line in proc.stdout.splitlines() if "not cached" in line]
    assert len(notes) == 1 and "Permission denied" in notes[0] and "DLKIT_CACHE_DIR" in notes[0], proc.stdout
    assert not list(cache.iterdir())  # the child really could not write there
    assert (run / "checkpoints" / "best.safetensors").is_file()


def test_same_seed_gives_identical_metrics(tmp_path):
    runs = [dlkit.train(data="digits", model="lenet-modern", epochs=2, seed=3, augment="light",
                        out=str(tmp_path / f"r{i}"), tensorboard=False, quiet=True) for i in range(2)]
    assert [r["val_loss"] for r in runs[0].history] == [r["val_loss"] for r in runs[1].history]


def test_tensorboard_event_files_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = dlkit.train(data="digits", model="softmax", epochs=2, out=str(tmp_path / "run"), quiet=True)
    events = EventAccumulator(str(run.dir / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= tags
    assert [e.step for e in events.Scalars("accuracy/val")] == [1, 2]


def test_decoded_folders_are_cached_on_disk_and_reused(folder, tmp_path, monkeypatch):
    from dlkit.data import decode_pool, open_source, prepare_data

    first = prepare_data(open_source(str(folder)), 12, 3, 12, disk_cache=True)
    real_load_image = decode_pool.load_image

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the disk cache")

    monkeypatch.setattr(decode_pool, "load_image", no_decoding)
    second = prepare_data(open_source(str(folder)), 12, 3, 12, disk_cache=True)
    assert torch.equal(first.train.images, second.train.images) and torch.equal(first.val.labels, second.val.labels)
    assert first.train.paths == second.train.paths
    (folder / "cat" / "img 0.png").write_bytes((folder / "cat" / "img 1.png").read_bytes())  # a changed file
    decoded = []
    monkeypatch.setattr(decode_pool, "load_image", lambda *a, **k: decoded.append(1) or real_load_image(*a, **k))
    prepare_data(open_source(str(folder)), 12, 3, 12, disk_cache=True)
    assert decoded  # the cache was invalidated and the folder decoded again


def test_the_disk_cache_skips_fsync_and_a_torn_cache_file_is_decoded_again(folder, monkeypatch):
    """A cache is not fsynced (0.6 s for 60,000 images): what a power cut could tear fails its digest on the next
    run, which then decodes the folder again and writes a whole file."""
    from dlkit.data import decode_pool, diskcache, open_source, prepare_data

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    others = set(diskcache.cache_dir().glob("*.safetensors"))  # the cache folder is the whole test session's
    first = prepare_data(open_source(str(folder)), 12, 3, 12, disk_cache=True)
    assert synced == []
    ours = set(diskcache.cache_dir().glob("*.safetensors")) - others  # the training split's and the validation's
    torn = max(ours, key=lambda p: p.stat().st_size)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    decoded = []
    real_load_image = decode_pool.load_image
    monkeypatch.setattr(decode_pool, "load_image", lambda *a, **k: decoded.append(1) or real_load_image(*a, **k))
    second = prepare_data(open_source(str(folder)), 12, 3, 12, disk_cache=True)
    assert decoded and torch.equal(first.train.images, second.train.images)
    assert diskcache.load_cached(torn.stem) is not None  # written whole again


def test_channels_last_probe_leaves_the_model_unchanged():
    from dlkit.device import prefers_channels_last

    model = dlkit.create_model("quick", in_channels=1, num_classes=3, image_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice = prefers_channels_last(model, torch.randn(8, 1, 16, 16), torch.device("cpu"))
    assert isinstance(choice, bool)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.skipif(not native_bf16_cpu(),
                    reason="this CPU has no native bf16 (AMX or AVX512-BF16), so --amp stays fp32 here")
def test_amp_trains_in_bf16_on_a_cpu_with_native_bf16(folder, tmp_path):
    from dlkit.device import autocast_for

    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast_for(torch.device("cpu"), True)():
        assert conv(torch.randn(2, 3, 8, 8)).dtype == torch.bfloat16
    run = dlkit.train(data=str(folder), model="quick", image_size=16, epochs=1, batch_size=4, amp=True,
                      out=str(tmp_path / "run"), tensorboard=False, quiet=True)
    assert run.summary["device"] == "cpu bf16" and math.isfinite(run.history[-1]["train_loss"])
    assert all(p.dtype == torch.float32 for p in run.load("cpu").model.parameters())  # fp32 master weights saved


def test_amp_stays_fp32_and_says_so_where_bf16_would_be_emulated(folder, tmp_path, monkeypatch, capsys):
    from dlkit import device

    monkeypatch.setattr(device, "native_bf16_cpu", lambda: False)
    conv = torch.nn.Conv2d(3, 4, 3)
    with device.autocast_for(torch.device("cpu"), True)():
        assert conv(torch.randn(2, 3, 8, 8)).dtype == torch.float32
    run = dlkit.train(data=str(folder), model="mlp", image_size=12, epochs=1, batch_size=4, amp=True,
                      out=str(tmp_path / "run"), tensorboard=False)
    assert run.summary["device"] == "cpu fp32" and run.summary["memory_format"] == "contiguous"  # an MLP: no convs
    assert "--amp: no native bf16 on cpu" in capsys.readouterr().out


def test_fast_path_and_dataloader_augmentation_have_the_same_distribution():
    """Crop offsets and flip rate of BatchAugment (device, batched) match transforms.v2 (DataLoader workers)."""
    from dlkit.data.augment import BatchAugment, file_augment

    size, n = 16, 3000
    image = torch.zeros(1, size, size, dtype=torch.uint8)
    image[0, 5, 3] = 255  # a marker off the centre: its position reveals the shift and the flip
    batched = BatchAugment("light", size, torch.Generator().manual_seed(0))(image.float().div(255).expand(n, -1, -1, -1))
    torch.manual_seed(0)
    v2 = file_augment("light", size)
    per_sample = torch.stack([v2(image) for _ in range(n)]).float().div(255)

    def stats(x):
        found = x[:, 0].flatten(1).argmax(1)
        visible = x[:, 0].flatten(1).amax(1) > 0.5
        rows, cols = found[visible] // size, found[visible] % size
        flipped = (cols > size // 2).float().mean()  # the marker sits left of centre unless flipped
        return visible.float().mean(), rows.float().mean(), rows.float().std(), flipped

    for ours, theirs in zip(stats(batched), stats(per_sample)):
        assert abs(float(ours) - float(theirs)) < 0.1 * max(1.0, abs(float(theirs)))


def test_cpu_threads_are_capped_at_the_cpus_the_process_may_use(monkeypatch, two_threads):
    from dlkit.device import configure_backends

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    configure_backends(torch.device("cpu"), deterministic=False)
    assert torch.get_num_threads() == 1


@pytest.fixture
def determinism_restored():
    yield
    torch.use_deterministic_algorithms(False)


def test_deterministic_is_strict_so_repeatability_is_never_silently_false(determinism_restored):
    from dlkit.device import configure_backends

    torch.use_deterministic_algorithms(True, warn_only=True)  # as an earlier dlkit (or the user) may have left it
    configure_backends(torch.device("cpu"), deterministic=True)
    with pytest.raises(RuntimeError, match="put_ does not have a deterministic implementation"):
        torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))  # which write wins is not fixed
    configure_backends(torch.device("cpu"), deterministic=False)
    torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))


def test_default_loader_workers_follow_the_cpus_the_process_may_use(folder, monkeypatch):
    from dlkit.data import open_source
    from dlkit.data.loaders import FileBatches

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    samples = open_source(str(folder)).split("train")
    batches = FileBatches(samples, 3, 12, 4, True, torch.device("cpu"))
    assert batches.loader.num_workers == 1


FAULTS_PER_STEP = """
import resource, torch, dlkit
from dlkit.device import configure_backends
configure_backends(torch.device("cpu"), deterministic=False)
model = dlkit.create_model("lenet", in_channels=1, num_classes=10, image_size=28)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
faults = []
for step in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[5:])[5])  # the median step: a stray burst (the VM reclaiming pages) moves one step, not this
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_cpu_training_steps_do_not_page_fault_their_activations_in_again():
    """Without keep_freed_memory, glibc unmaps freed activations: each of these LeNet steps faulted 6,632 pages."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    assert float(out.split()[-1]) < 100


def test_dataloader_path_leaves_its_workers_their_cpus_while_it_iterates(folder, monkeypatch, two_threads):
    from dlkit.data import open_source
    from dlkit.data.loaders import FileBatches

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    batches = FileBatches(open_source(str(folder)).split("train"), 3, 12, 4, True, torch.device("cpu"), workers=1)
    during = [torch.get_num_threads() for _ in batches]
    assert during and set(during) == {1}  # two CPUs, one decoding: one compute thread
    assert torch.get_num_threads() == 2  # given back afterwards


SIDE_THREAD = """
import os, threading, torch
from dlkit.device import one_thread_here

torch.set_num_threads(2)
torch.randn(2_000_000).exp_()  # the main thread's OpenMP team exists
before = len(os.listdir("/proc/self/task"))
extra = []
for settle in (False, True):
    ran, finish = threading.Event(), threading.Event()
    def side():
        if settle:
            one_thread_here()
        torch.randn(2_000_000).exp_()  # a parallel op on the side thread
        ran.set()
        finish.wait()
    thread = threading.Thread(target=side)
    thread.start()
    ran.wait()
    extra.append(len(os.listdir("/proc/self/task")) - before - 1)  # OS threads beyond the side thread itself
    finish.set()
    thread.join()
for _ in range(20):  # side threads settling at the same moment: none may leave its 1 as the process-wide count
    start = threading.Barrier(4)
    settling = [threading.Thread(target=lambda: (start.wait(), one_thread_here())) for _ in range(4)]
    for thread in settling:
        thread.start()
    for thread in settling:
        thread.join()
fresh = []
thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
thread.start()
thread.join()
print(*extra, torch.get_num_threads(), fresh[0])
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_side_threads_start_no_second_openmp_team_and_leave_other_threads_counts_alone():
    """A second team makes libgomp stop spinning between regions: every training step then waits on wake-ups."""
    out = subprocess.run([sys.executable, "-c", SIDE_THREAD], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    without, settled, main, fresh = map(int, out)
    assert without == 1  # the side thread's own OpenMP worker, kept while it lives (what one_thread_here avoids)
    assert settled == 0
    assert (main, fresh) == (2, 2)  # not torch.set_num_threads(1): that would become every new thread's count
