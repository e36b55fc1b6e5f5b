"""Training speed on Fashion-MNIST (IDX files, and with --folder a folder of JPEGs made from it): the tutorial loop,
PyTorch Lightning (if installed) and dlkit, with the same model, data, batch size, optimizer and epochs.

Two figures per variant, each against the tutorial as the notes write it (4 loader workers):
  img/s    over the training steps only: dlkit decodes into memory, reads its disk cache and probes the memory
           format before these start, while the tutorial decodes per sample inside them (its design);
  to last  seconds from process start (interpreter start-up and imports included) to the end of the last training
           step: everything each side does before and during training, every epoch's validation but the last.
"tutorial-Nw" is the same loop with N workers = the CPUs this process may use, a plain loop sized to the machine.
With --folder, dlkit runs twice: "cold" with an empty decoded-image cache, then warm (reading what cold wrote).
Lightning gets the same loaders as the tutorial, validates each epoch like the others, and is timed at the same
points (from each epoch's start to its last step; process start to the last step).

    python benchmarks/throughput.py                       # lenet, lenet-modern, quick; 2 epochs each
    python benchmarks/throughput.py --models lenet --epochs 10 --device cuda --folder
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (ProcessClock, emit, fashion_dir, jpeg_folder, recipe_for, run_variant,  # noqa: E402
                    torchvision_root, usable_cpus)

TRAIN_IMAGES = 60000


def run_one(args) -> None:
    clock = ProcessClock()
    import torch

    import dlkit

    recipe = recipe_for(args.model)
    fashion = fashion_dir()
    folder = jpeg_folder(fashion) if args.source == "folder" else None
    torch.manual_seed(0)
    if args.variant.startswith("dlkit"):
        return emit(_dlkit(args, folder or fashion, recipe, clock))
    model = dlkit.create_model(args.model, in_channels=1, num_classes=10, image_size=28)
    workers = usable_cpus() if args.variant.startswith("tutorial-") else 4  # 4: as the notes write it
    from tutorial import d2l_loaders

    train_iter, test_iter = d2l_loaders(torchvision_root(fashion), recipe["batch_size"], folder, workers=workers)
    if args.variant == "lightning":
        result = _lightning(model, train_iter, test_iter, args, recipe)
    else:
        from tutorial import train_ch6

        result = train_ch6(model, train_iter, test_iter, args.epochs, recipe["lr"], torch.device(args.device))
    emit({"variant": args.variant, "precision": "fp32", "to_last_step_s": clock.at(result.pop("train_end")), **result})


def _dlkit(args, data: Path, recipe: dict, clock: ProcessClock) -> dict:
    import dlkit
    from tutorial import steady_rate

    last_step = LastStep()
    run = dlkit.train(data=str(data), model=args.model, epochs=args.epochs, device=args.device, out=None,
                      runs_dir="/tmp/dlkit-bench-runs", tensorboard=False, report=False, quiet=True, channels=1,
                      image_size=28, amp=args.amp, callbacks=[last_step], **recipe)  # 28: as the tutorial reads them
    h = [r for r in run.history if not r.get("within_epoch")]
    seconds = [TRAIN_IMAGES / r["images_per_s"] for r in h]  # each epoch's training steps only
    return {"variant": args.variant, "precision": run.summary["device"].split()[-1],
            "images_per_s": TRAIN_IMAGES * len(h) / sum(seconds),
            "steady_images_per_s": steady_rate(TRAIN_IMAGES, seconds),
            "test_acc": h[-1]["val_acc"], "to_last_step_s": clock.at(last_step.at)}


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
    return {"images_per_s": TRAIN_IMAGES * len(timer.epoch_s) / sum(timer.epoch_s),
            "steady_images_per_s": steady_rate(TRAIN_IMAGES, timer.epoch_s), "train_end": timer.last,
            "test_acc": evaluate_accuracy(model, test_iter, torch.device(args.device))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet,lenet-modern,quick")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="dlkit with bf16 autocast where it pays (default off: the same fp32 as the tutorial loop)")
    p.add_argument("--variants", default="tutorial,tutorial-sized,lightning,dlkit",
                   help="which loops to run (lightning when installed)")
    p.add_argument("--folder", action="store_true", help="also measure on a folder of JPEGs made from Fashion-MNIST")
    p.add_argument("--one", nargs=3, metavar=("VARIANT", "MODEL", "SOURCE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.variant, args.model, args.source = args.one
        return run_one(args)
    torchvision_root(fashion_dir())  # unpacked and written once, here, so no variant's time includes it
    if args.folder:
        jpeg_folder(fashion_dir())
    variants = _variants(args.variants)
    sources = ["idx", "folder"] if args.folder else ["idx"]
    print(f"Fashion-MNIST, {args.epochs} epoch(s), device {args.device}; img/s over the training steps, 'to last' "
          "from process start to the last step; ratios against the tutorial loop as the notes write it (4 workers), "
          "x to last = its seconds / theirs (above 1: sooner)")
    print(f"{'model':<13} {'source':<7} {'variant':<12} {'prec':<5} {'img/s':>8} {'steady':>8} {'to last':>8} "
          f"{'test acc':>8} {'peak MB':>8} {'x img/s':>8} {'x to last':>9}")
    for model in args.models.split(","):
        for source in sources:
            results = _measure(model, source, variants, args)
            ref = results["tutorial"]
            for name, r in results.items():
                steady = r.get("steady_images_per_s")
                print(f"{model:<13} {source:<7} {name:<12} {r['precision']:<5} {r['images_per_s']:>8,.0f} "
                      f"{f'{steady:,.0f}' if steady else '-':>8} {r['to_last_step_s']:>7.1f}s {r['test_acc']:>8.4f} "
                      f"{r['peak_rss_mb']:>8.0f} {r['images_per_s'] / ref['images_per_s']:>7.2f}x "
                      f"{ref['to_last_step_s'] / r['to_last_step_s']:>8.2f}x", flush=True)
            sized = next(n for n in results if n.startswith("tutorial-"))
            for name in (n for n in results if n.startswith("dlkit")):
                r, s = results[name], results[sized]
                print(f"{'':<21} {name} against {sized}: img/s {r['images_per_s'] / s['images_per_s']:.2f}x, "
                      f"at the last step {_sooner(s['to_last_step_s'], r['to_last_step_s'])}")


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
        if v not in ("tutorial", "tutorial-sized"):
            variants.append(v)
    return variants


def _measure(model: str, source: str, variants: list[str], args) -> dict:
    common = ["--epochs", str(args.epochs), "--device", args.device, "--amp" if args.amp else "--no-amp"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="dlkit-bench-cache-") as cache:
        for v in variants:
            if v == "dlkit" and source == "folder":  # first with nothing cached, then reading what that run wrote
                results["dlkit-cold"] = run_variant("throughput.py", *common, "--one", "dlkit-cold", model, source,
                                                    env={"DLKIT_CACHE_DIR": cache})
            results[v] = run_variant("throughput.py", *common, "--one", v, model, source,
                                     env={"DLKIT_CACHE_DIR": cache})
    return results


if __name__ == "__main__":
    main()
