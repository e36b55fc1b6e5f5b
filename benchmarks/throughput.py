"""Training speed on Fashion-MNIST (IDX files, and with --folder a CIFAR-shaped folder of JPEGs made from it): the
tutorial loop, PyTorch Lightning (if installed) and dlkit, with the same model, data, batch size, optimizer and epochs.

Two figures per variant, each against the tutorial as the notes write it (4 loader workers):
  img/s    over the training steps only: dlkit decodes into memory, reads its disk cache and probes the memory
           format before these start, while the tutorial decodes per sample inside them (its design);
  to last  seconds from process start (interpreter start-up and imports included) to the end of the last training
           step: everything each side does before and during training, every epoch's validation but the last.
"bare" is the floor: the same model, batch and SGD with the data already on the device and no host sync per step;
"bare-graphed" (CUDA) the same with each step one replayed CUDA graph (both default with --device cuda).
"tutorial-Nw" is the same loop with N workers = the CPUs this process may use, a plain loop sized to the machine.
With --folder (32 px RGB JPEGs in class folders, read as the course's CIFAR-10 loop reads them: ImageFolder + ToTensor,
batch 64, SGD lr 0.01), dlkit runs twice: "cold" with an empty decoded-image cache, then warm (reading what cold
wrote); the variant dlkit-cold-pil is cold with the fast decode path off (DLKIT_FAST_DECODE=0). --decode times only
listing and decoding that folder in one process: Pillow in threads, the fast path in threads, and the fast path in
forked worker processes (dlkit's path now). --repeat N runs every variant N times
(the order reversed every other round) and prints medians, with each variant's CPU seconds (workers included).
Lightning gets the same loaders as the tutorial, validates each epoch like the others, and is timed at the same
points (from each epoch's start to its last step; process start to the last step).

    python benchmarks/throughput.py                       # lenet, lenet-modern, quick; 2 epochs each
    python benchmarks/throughput.py --models lenet --epochs 10 --device cuda --folder
    python benchmarks/throughput.py --models quick --epochs 1 --sources folder --variants tutorial,dlkit,dlkit-cold-pil
    python benchmarks/throughput.py --decode [--folder-images 20000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (ProcessClock, emit, fashion_dir, median, recipe_for, run_variant, torchvision_root,  # noqa: E402
                    usable_cpus)

TRAIN_IMAGES = 60000
FOLDER_RECIPE = {"optimizer": "sgd", "lr": 0.01, "batch_size": 64}  # the course's CIFAR-10 loop, for --folder
FOLDER_SHAPE = {"in_channels": 3, "image_size": 32}                # CIFAR-shaped: 32 px RGB JPEGs


def cifar_folder(fashion: Path, train_images: int = TRAIN_IMAGES) -> Path:
    """A CIFAR-10-shaped folder: train/ (60,000 or the first `train_images`) and val/ (a sixth of that) of 32 px RGB
    JPEGs in 10 class folders, made once (in the temp dir) from Fashion-MNIST, each garment padded to 32 px and
    painted in random colours over a random background with some grain, so the JPEGs carry colour as photos do
    (a grey-in-RGB file would decode faster). Pillow's default quality (75), as CIFAR-10 JPEG exports use."""
    suffix = "" if train_images == TRAIN_IMAGES else f"-{train_images}"
    root = Path(tempfile.gettempdir()) / f"dlkit-bench-cifar-jpeg{suffix}"
    if (root / "done").exists():
        return root
    import numpy as np
    from PIL import Image

    from dlkit.data.idx import read_idx_split

    rng = np.random.default_rng(0)
    for split, folder, n in (("train", "train", train_images), ("test", "val", min(10000, train_images // 6))):
        images, labels = read_idx_split(fashion, split)
        images, labels = images[:n], labels[:n]
        shape = np.pad(images[:, 0].numpy(), ((0, 0), (2, 2), (2, 2)))[..., None] / 255.0  # N x 32 x 32 x 1
        fg, bg = rng.uniform(0, 255, (2, len(shape), 1, 1, 3))
        grain = rng.normal(0, 12, shape.shape[:3] + (3,))
        pixels = np.clip(bg + (fg - bg) * shape + grain, 0, 255).astype(np.uint8)
        for i, (img, label) in enumerate(zip(pixels, labels.tolist())):
            d = root / folder / f"class{label}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:05d}.jpg")
    (root / "done").touch()
    return root


def run_one(args) -> None:
    clock = ProcessClock()
    import torch

    import dlkit

    fashion = fashion_dir()
    folder = cifar_folder(fashion, args.folder_images) if args.source == "folder" else None
    recipe = FOLDER_RECIPE if folder else recipe_for(args.model)
    shape = FOLDER_SHAPE if folder else {"in_channels": 1, "image_size": 28}
    torch.manual_seed(0)
    if args.variant.startswith("dlkit"):
        return emit(_dlkit(args, folder or fashion, recipe, shape, clock))
    if args.variant.startswith("bare"):
        model = dlkit.create_model(args.model, num_classes=10, **shape)
        result = _bare(model, fashion, recipe, args, graphed=args.variant == "bare-graphed")
        train_end = result.pop("train_end")
        return emit({**result, "to_last_step_s": clock.at(train_end)})
    model = dlkit.create_model(args.model, num_classes=10, **shape)
    workers = usable_cpus() if args.variant.startswith("tutorial-") else 4  # 4: as the notes write it
    if folder:
        train_iter, test_iter = course_folder_loaders(folder, recipe["batch_size"], workers)
    else:
        from tutorial import d2l_loaders

        train_iter, test_iter = d2l_loaders(torchvision_root(fashion), recipe["batch_size"], workers=workers)
    if args.variant == "lightning":
        result = _lightning(model, train_iter, test_iter, args, recipe)
    else:
        from tutorial import train_ch6

        result = train_ch6(model, train_iter, test_iter, args.epochs, recipe["lr"], torch.device(args.device))
    emit({"variant": args.variant, "precision": "fp32", "to_last_step_s": clock.at(result.pop("train_end")), **result})


def course_folder_loaders(folder: Path, batch_size: int, workers: int):
    """The course's CIFAR-10 loaders: ImageFolder + ToTensor (decoding each JPEG with Pillow as it is drawn)."""
    import torch
    import torchvision
    from torchvision import transforms

    train = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transforms.ToTensor())
    test = torchvision.datasets.ImageFolder(str(folder / "val"), transform=transforms.ToTensor())
    return (torch.utils.data.DataLoader(train, batch_size, shuffle=True, num_workers=workers),
            torch.utils.data.DataLoader(test, batch_size, shuffle=False, num_workers=workers))


def _dlkit(args, data: Path, recipe: dict, shape: dict, clock: ProcessClock) -> dict:
    import dlkit
    from tutorial import steady_rate

    last_step = LastStep()
    run = dlkit.train(data=str(data), model=args.model, epochs=args.epochs, device=args.device, out=None,
                      runs_dir="/tmp/dlkit-bench-runs", tensorboard=False, report=False, quiet=True,
                      channels=shape["in_channels"], image_size=shape["image_size"],  # as the tutorial reads them
                      amp=args.amp, callbacks=[last_step], **recipe)
    h = [r for r in run.history if not r.get("within_epoch")]
    n = args.folder_images if args.source == "folder" else TRAIN_IMAGES
    seconds = [n / r["images_per_s"] for r in h]  # each epoch's training steps only
    return {"variant": args.variant, "precision": run.summary["device"].split(" ", 1)[1],  # "bf16", "fp32", "fp32 (tf32 matmuls)"
            "images_per_s": n * len(h) / sum(seconds),
            "steady_images_per_s": steady_rate(n, seconds),
            "test_acc": h[-1]["val_acc"], "to_last_step_s": clock.at(last_step.at),
            "setup_s": run.summary.get("timing", {}).get("setup_s")}  # process start to the first step


def _bare(model, fashion: Path, recipe: dict, args, graphed: bool) -> dict:
    """The floor: the same model, batch, SGD and learning rate, the whole training split already on the device as
    floats in [0, 1] (as ToTensor gives), batches drawn by indexing a permutation made on the device, no host sync
    until the epoch ends, full batches only; with `graphed`, each step (forward, loss, backward, SGD step) one CUDA
    graph replayed, captured after 3 warm-up steps on a side stream as PyTorch's CUDA-graph notes do."""
    import torch

    from dlkit.data.idx import read_idx_split
    from tutorial import steady_rate

    device = torch.device(args.device)
    images, labels = read_idx_split(fashion, "train")
    x_all, y_all = (images.to(device).float() / 255), labels.to(device)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = recipe["batch_size"]
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16, cache_enabled=False)) if args.amp else None
    static_x, static_y = x_all[:batch].clone(), y_all[:batch].clone()

    def step():
        opt.zero_grad(set_to_none=not graphed)
        with autocast() if autocast else torch.enable_grad():
            loss = loss_fn(model(static_x), static_y)
        loss.backward()
        opt.step()
        return loss

    replay = step
    if graphed:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            step()
        replay = graph.replay
    steps = len(y_all) // batch
    epoch_s = []
    for _ in range(args.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(y_all), device=device)
        for i in range(steps):
            index = order[i * batch:(i + 1) * batch]
            torch.index_select(x_all, 0, index, out=static_x)
            torch.index_select(y_all, 0, index, out=static_y)
            replay()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_s.append(time.perf_counter() - start)
    train_end = time.perf_counter()
    test_images, test_labels = read_idx_split(fashion, "test")
    model.eval()
    with torch.no_grad():
        x, y = test_images.to(device).float() / 255, test_labels.to(device)
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    return {"variant": args.variant, "precision": "bf16" if args.amp else "fp32",
            "images_per_s": steps * batch * len(epoch_s) / sum(epoch_s),
            "steady_images_per_s": steady_rate(steps * batch, epoch_s), "train_end": train_end,
            "test_acc": correct / len(y)}


class LastStep:
    """Remembers when the latest training step ended (a perf_counter reading: cheap enough for every step)."""

    at = None

    def on_batch_end(self, trainer, batch_size, loss):
        self.at = time.perf_counter()


def _lightning(model, train_iter, test_iter, args, recipe) -> dict:
    import lightning as L
    import torch

    from tutorial import accuracy, evaluate_accuracy, steady_rate

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.loss = model, torch.nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            x, y = batch
            return self.loss(self.net(x), y)

        def validation_step(self, batch, _):  # as the tutorial evaluates each epoch
            x, y = batch
            self.log("val_acc", accuracy(self.net(x), y) / len(y), on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=recipe["lr"])

    class Timer(L.Callback):  # the tutorial's timing points: each epoch's start to its last step
        epoch_s, started, last = [], None, None

        def on_train_epoch_start(self, trainer, module):
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.last = time.perf_counter()
            if batch_idx == trainer.num_training_batches - 1:
                self.epoch_s.append(self.last - self.started)

    timer = Timer()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator=args.device, devices=1, logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Module(), train_iter, test_iter)
    device = torch.device(args.device)
    model.to(device)  # Lightning hands the module back on the CPU after fit: the accuracy pass feeds `device` batches
    return {"images_per_s": TRAIN_IMAGES * len(timer.epoch_s) / sum(timer.epoch_s),
            "steady_images_per_s": steady_rate(TRAIN_IMAGES, timer.epoch_s), "train_end": timer.last,
            "test_acc": evaluate_accuracy(model, test_iter, device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet,lenet-modern,quick")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="dlkit with bf16 autocast where it pays (default off: the same fp32 as the tutorial loop)")
    p.add_argument("--variants", default=None,
                   help="which loops to run: tutorial, tutorial-sized, lightning (when installed), dlkit, bare, "
                   "bare-graphed (CUDA only: the floor); default the first four, and the bare two with --device cuda")
    p.add_argument("--folder", action="store_true", help="also measure on a CIFAR-shaped folder of 32 px RGB JPEGs "
                   "made from Fashion-MNIST (the same as --sources idx,folder)")
    p.add_argument("--sources", default=None, help="idx, folder or both (default idx; idx,folder with --folder)")
    p.add_argument("--folder-images", type=int, default=TRAIN_IMAGES,
                   help="training images in that folder (validation: a sixth of it); fewer on a loaded machine")
    p.add_argument("--decode", action="store_true", help="only time listing + decoding the folder: Pillow in threads, "
                   "the fast path in threads and in worker processes, alternated in one process")
    p.add_argument("--repeat", type=int, default=None, help="rounds of every variant, the order reversed each round, "
                   "medians shown: for a machine others share (default 1; 3 with --decode)")
    p.add_argument("--one", nargs=3, metavar=("VARIANT", "MODEL", "SOURCE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.variant, args.model, args.source = args.one
        return run_one(args)
    sources = (args.sources or ("idx,folder" if args.folder else "idx")).split(",")
    torchvision_root(fashion_dir())  # unpacked and written once, here, so no variant's time includes it
    if "folder" in sources or args.decode:
        cifar_folder(fashion_dir(), args.folder_images)
    if args.decode:
        return decode_rounds(cifar_folder(fashion_dir(), args.folder_images), args.repeat or 3)
    variants = _variants(args.variants or "tutorial,tutorial-sized,lightning,dlkit"
                         + (",bare,bare-graphed" if args.device.startswith("cuda") else ""))
    print(f"Fashion-MNIST, {args.epochs} epoch(s), device {args.device}; img/s over the training steps, 'to last' "
          "from process start to the last step; ratios against the tutorial loop as the notes write it (4 workers), "
          "x to last = its seconds / theirs (above 1: sooner); cpu s = CPU seconds of its processes (workers "
          "included), a steadier figure than wall time on a machine others share")
    if "folder" in sources:
        print(f"folder: {args.folder_images:,} + {min(10000, args.folder_images // 6):,} CIFAR-shaped 32 px RGB JPEGs "
              f"made from it, every side with the course's CIFAR-10 recipe (batch 64, SGD lr 0.01)")
    print(f"{'model':<13} {'source':<7} {'variant':<14} {'prec':<5} {'img/s':>8} {'steady':>8} {'to last':>8} "
          f"{'test acc':>8} {'peak MB':>8} {'cpu s':>7} {'x img/s':>8} {'x to last':>9} {'x cpu':>6}")
    for model in args.models.split(","):
        for source in sources:
            results = _measure(model, source, variants, args)
            ref = results["tutorial"]
            for name, r in results.items():
                steady = r.get("steady_images_per_s")
                print(f"{model:<13} {source:<7} {name:<14} {r['precision']:<5} {r['images_per_s']:>8,.0f} "
                      f"{f'{steady:,.0f}' if steady else '-':>8} {r['to_last_step_s']:>7.1f}s {r['test_acc']:>8.4f} "
                      f"{r['peak_rss_mb']:>8.0f} {r['cpu_s']:>7.1f} {r['images_per_s'] / ref['images_per_s']:>7.2f}x "
                      f"{ref['to_last_step_s'] / r['to_last_step_s']:>8.2f}x {ref['cpu_s'] / r['cpu_s']:>5.2f}x",
                      flush=True)
            sized = next(n for n in results if n.startswith("tutorial-"))
            for name in (n for n in results if n.startswith("dlkit")):
                r, s = results[name], results[sized]
                setup = f" (setup, listing and decoding included: {r['setup_s']:.1f}s)" if r.get("setup_s") else ""
                print(f"{'':<21} {name} against {sized}: img/s {r['images_per_s'] / s['images_per_s']:.2f}x, "
                      f"at the last step {_sooner(s['to_last_step_s'], r['to_last_step_s'])}{setup}")
                floor = next((n for n in ("bare-graphed", "bare") if n in results), None)
                if floor:  # issue 22's goal: dlkit's whole-epoch img/s at least half the graphed bare loop's
                    print(f"{'':<21} {name} against the floor ({floor}): img/s "
                          f"{r['images_per_s'] / results[floor]['images_per_s']:.2f}x")


DECODE_PATHS = {"pil-threads": (False, False), "fast-threads": (True, False), "fast-procs": (True, True)}


def decode_rounds(folder: Path, repeat: int) -> None:
    """Seconds to list the folder and decode its training images into one uint8 tensor, as a cold dlkit run does
    before its first step: Pillow in threads (before the fast path), the fast path in threads (before worker
    processes), and the fast path in forked worker processes (dlkit now), alternated; CPU seconds include workers."""
    import resource

    import dlkit.data.decode_pool as decode_pool
    import dlkit.data.fastdecode as fastdecode
    from dlkit.data.layouts import open_source
    from dlkit.data.loaders import decode_files

    seconds = {name: [] for name in DECODE_PATHS}
    print(f"{folder}: listing + decoding its train/ at 32 px RGB, {usable_cpus()} threads or processes; rounds "
          "alternate")
    threshold = decode_pool.PROCESS_MIN_FILES
    for r in range(repeat):
        for name in list(DECODE_PATHS)[::1 if r % 2 == 0 else -1]:
            fastdecode.ENABLED, processes = DECODE_PATHS[name]
            decode_pool.PROCESS_MIN_FILES = threshold if processes else float("inf")
            start, cpu = time.perf_counter(), time.process_time()
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            source = open_source(str(folder))
            listed = time.perf_counter() - start
            decoded, _ = decode_files(source.train, 3, 32, strict=True, keep=True)
            seconds[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = time.process_time() - cpu + (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
            print(f"  {name:<12} listing {listed:5.2f}s  listing + decoding {seconds[name][-1]:6.2f}s  "
                  f"({len(decoded):,} images, {len(decoded) / (seconds[name][-1] - listed):,.0f} decoded/s; "
                  f"{cpu:.1f} CPU s)", flush=True)
    base = median(seconds["pil-threads"])
    print(f"median of {repeat}: " + ", ".join(f"{name} {median(v):.2f}s ({base / median(v):.2f}x)"
                                              for name, v in seconds.items()) + "; x: sooner than pil-threads")


def _sooner(reference_s: float, seconds: float) -> str:
    ratio = reference_s / seconds
    return f"{ratio:.2f}x sooner" if ratio >= 1 else f"{1 / ratio:.2f}x later"


def _variants(requested: str) -> list[str]:
    variants = ["tutorial", f"tutorial-{usable_cpus()}w"]
    for v in requested.split(","):
        if v == "lightning":
            try:
                import lightning  # noqa: F401
            except ImportError:
                print("(PyTorch Lightning not installed: `pip install lightning` to add it)")
                continue
        if v == "bare-graphed" and not _cuda_here():
            print("(bare-graphed needs CUDA: left out)")
            continue
        if v not in ("tutorial", "tutorial-sized"):
            variants.append(v)
    return variants


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


def _measure(model: str, source: str, variants: list[str], args) -> dict:
    """Each variant's result (medians over --repeat rounds), in the order given; dlkit on a folder runs cold (an empty
    cache) and then warm (reading what cold wrote), every round."""
    common = ["--epochs", str(args.epochs), "--device", args.device, "--amp" if args.amp else "--no-amp",
              "--folder-images", str(args.folder_images)]
    runs = {}
    for r in range(args.repeat or 1):
        with tempfile.TemporaryDirectory(prefix="dlkit-bench-cache-") as cache:
            for v in variants if r % 2 == 0 else variants[::-1]:
                if (v == "dlkit-cold-pil" and source != "folder") or (v.startswith("bare") and source == "folder"):
                    continue  # the floor's data is the IDX split on the device: no folder to read
                names = ["dlkit-cold", "dlkit"] if v == "dlkit" and source == "folder" else [v]
                for name in names:
                    env = {"DLKIT_CACHE_DIR": cache}
                    if name == "dlkit-cold-pil":  # cold too: a cache of its own, nothing in it
                        env = {"DLKIT_CACHE_DIR": str(Path(cache) / "pil"), "DLKIT_FAST_DECODE": "0"}
                    runs.setdefault(name, []).append(_timed_variant(*common, "--one", name, model, source, env=env))
    order = [n for v in variants for n in (["dlkit-cold", "dlkit"] if v == "dlkit" else [v]) if n in runs]
    return {name: _medians(runs[name]) for name in order}


def _timed_variant(*args: str, env: dict) -> dict:
    """run_variant's result plus the CPU seconds of the variant's process and the workers it waited for."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_variant("throughput.py", *args, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**result, "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}


def _medians(results: list[dict]) -> dict:
    numbers = {k for k, v in results[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: (median([r[k] for r in results]) if k in numbers and all(r.get(k) is not None for r in results)
                else results[0][k]) for k in results[0]}


if __name__ == "__main__":
    main()
