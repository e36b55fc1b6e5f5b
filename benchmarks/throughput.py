"""Images/s, seconds per epoch, peak RSS and final test accuracy: the tutorial loop vs PyTorch Lightning (if
installed) vs dlkit, same model, data, batch size, optimizer and epochs, on Fashion-MNIST (IDX files, and with
--folder a folder of JPEGs made from it).

    python benchmarks/throughput.py                       # lenet, lenet-modern, quick; 2 epochs each
    python benchmarks/throughput.py --models lenet --epochs 10 --device cuda --folder
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import emit, fashion_dir, jpeg_folder, recipe_for, run_variant, torchvision_root  # noqa: E402


def run_one(args) -> None:
    import torch

    import dlkit

    recipe = recipe_for(args.model)
    fashion = fashion_dir()
    folder = jpeg_folder(fashion) if args.source == "folder" else None
    torch.manual_seed(0)
    if args.variant == "dlkit":
        run = dlkit.train(data=str(folder or fashion), model=args.model, epochs=args.epochs, device=args.device,
                          out=None, runs_dir=str(Path("/tmp/dlkit-bench-runs")), tensorboard=False, quiet=True,
                          channels=1, image_size=28, amp=args.amp, **recipe)  # 28: as the tutorial reads them
        from tutorial import steady_rate

        h = run.history
        rate = 60000 * len(h) / sum(60000 / r["images_per_s"] for r in h)  # over training time only
        steady = steady_rate(60000, [60000 / r["images_per_s"] for r in h])
        emit({"variant": "dlkit", "images_per_s": rate, "s_per_epoch": 60000 / rate, "steady_images_per_s": steady,
              "test_acc": h[-1]["val_acc"], "wall_s": run.summary["wall_s"]})
        return
    model = dlkit.create_model(args.model, in_channels=1, num_classes=10, image_size=28)
    train_iter, test_iter = _loaders(args, fashion, folder, recipe["batch_size"])
    if args.variant == "tutorial":
        from tutorial import train_ch6

        result = train_ch6(model, train_iter, test_iter, args.epochs, recipe["lr"], torch.device(args.device))
    else:
        result = _lightning(model, train_iter, test_iter, args, recipe)
    emit({"variant": args.variant, **result})


def _loaders(args, fashion, folder, batch_size):
    from tutorial import d2l_loaders

    return d2l_loaders(torchvision_root(fashion), batch_size, folder, workers=4)


def _lightning(model, train_iter, test_iter, args, recipe):
    import time

    import lightning as L
    import torch

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.loss = model, torch.nn.CrossEntropyLoss()

        def training_step(self, batch, _):
            x, y = batch
            return self.loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=recipe["lr"])

    trainer = L.Trainer(max_epochs=args.epochs, accelerator=args.device, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(Module(), train_iter)
    seconds = time.perf_counter() - start
    from tutorial import evaluate_accuracy

    acc = evaluate_accuracy(model, test_iter, torch.device(args.device))
    return {"images_per_s": 60000 * args.epochs / seconds, "s_per_epoch": seconds / args.epochs, "test_acc": acc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet,lenet-modern,quick")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="dlkit with bf16 autocast on CUDA (default off: the same fp32 as the tutorial loop)")
    p.add_argument("--variants", default="tutorial,lightning,dlkit", help="which loops to run (lightning when installed)")
    p.add_argument("--folder", action="store_true", help="also measure on a folder of JPEGs made from Fashion-MNIST")
    p.add_argument("--one", nargs=3, metavar=("VARIANT", "MODEL", "SOURCE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.variant, args.model, args.source = args.one
        return run_one(args)
    fashion_dir()
    variants = ["tutorial", *[v for v in args.variants.split(",") if v != "tutorial"]]
    if "lightning" in variants:
        try:
            import lightning  # noqa: F401
        except ImportError:
            variants.remove("lightning")
            print("(PyTorch Lightning not installed: `pip install lightning` to add it)")
    sources = ["idx", "folder"] if args.folder else ["idx"]
    print(f"Fashion-MNIST, {args.epochs} epoch(s), device {args.device}{' (dlkit bf16)' if args.amp else ''}; "
          "images/s over training steps only")
    print(f"{'model':<13} {'source':<7} {'variant':<10} {'img/s':>9} {'steady':>9} {'s/epoch':>8} {'peak MB':>8} "
          f"{'test acc':>9} {'x tutorial':>10} {'x steady':>9}")
    print("  (steady: images/s over epochs after the first, leaving out warm-up and cuDNN autotuning)")
    for model in args.models.split(","):
        for source in sources:
            results = {v: run_variant("throughput.py", "--epochs", str(args.epochs), "--device", args.device,
                                      "--amp" if args.amp else "--no-amp", "--one", v, model, source)
                       for v in variants}
            ref, ref_steady = results["tutorial"]["images_per_s"], results["tutorial"].get("steady_images_per_s")
            for v, r in results.items():
                steady = r.get("steady_images_per_s")
                ratio = f"{steady / ref_steady:>8.2f}x" if steady and ref_steady else f"{'-':>9}"
                print(f"{model:<13} {source:<7} {v:<10} {r['images_per_s']:>9,.0f} "
                      f"{f'{steady:,.0f}' if steady else '-':>9} {r['s_per_epoch']:>8.2f} {r['peak_rss_mb']:>8.0f} "
                      f"{r['test_acc']:>9.4f} {r['images_per_s'] / ref:>9.2f}x {ratio}", flush=True)


if __name__ == "__main__":
    main()
