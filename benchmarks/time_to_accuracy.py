"""Wall seconds from process start to a target test accuracy on Fashion-MNIST (data loading and evaluation
included): dlkit's best CPU recipe against the tutorial loop with the d2l LeNet recipe (10 epochs at most).

    python benchmarks/time_to_accuracy.py                 # target 0.90, on the CPU
    python benchmarks/time_to_accuracy.py --target 0.93 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).parent))
from common import emit, fashion_dir, run_variant, torchvision_root  # noqa: E402

# dlkit's recipe for this CPU: BatchNorm LeNet, AdamW with a one-cycle schedule, a few epochs; bf16 autocast where
# the CPU has it natively (AMX), else fp32.
BEST = {"cpu": dict(model="lenet-modern", optimizer="adamw", lr=0.01, batch_size=256, epochs=4,
                    schedule="onecycle", weight_decay=0.05, amp=True),
        "cuda": dict(model="resnet18", optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, batch_size=512,
                     epochs=8, schedule="onecycle", weight_decay=5e-4, augment="light", label_smoothing=0.1, amp=True)}


class StopAtTarget:
    def __init__(self, target: float):
        self.target, self.reached_s, self.epoch, self.fit_start, self.train_s = target, None, None, None, None

    def on_fit_start(self, trainer):
        self.fit_start = time.perf_counter()  # data decoded, model built: from here on it is training time

    def on_epoch_end(self, trainer, record):
        if self.reached_s is None and record["val_acc"] >= self.target:
            now = time.perf_counter()
            self.reached_s, self.train_s, self.epoch = now - STARTED, now - self.fit_start, record["epoch"]
            trainer.should_stop = True


def run_one(variant: str, target: float, device: str) -> None:
    import torch

    fashion = fashion_dir()
    if variant == "dlkit":
        import dlkit

        stop = StopAtTarget(target)
        run = dlkit.train(data=str(fashion), device=device, tensorboard=False, quiet=True,
                          runs_dir="/tmp/dlkit-bench-runs", callbacks=[stop], **BEST[device])
        emit({"variant": "dlkit", "reached_s": stop.reached_s, "train_s": stop.train_s, "epoch": stop.epoch,
              "best_acc": run.summary["best_val_acc"], "wall_s": time.perf_counter() - STARTED})
        return
    import dlkit
    from tutorial import d2l_loaders, train_ch6

    torch.manual_seed(0)
    state = {"reached_s": None, "train_s": None, "epoch": None, "best": 0.0}

    def on_epoch(epoch, acc):
        state["best"] = max(state["best"], acc)
        if state["reached_s"] is None and acc >= target:
            now = time.perf_counter()
            state.update(reached_s=now - STARTED, train_s=now - fit_start, epoch=epoch)

    train_iter, test_iter = d2l_loaders(torchvision_root(fashion), 256)
    model = dlkit.create_model("lenet", in_channels=1, num_classes=10, image_size=28)
    fit_start = time.perf_counter()
    train_ch6(model, train_iter, test_iter, 10, 0.9, torch.device(device), on_epoch=on_epoch)
    emit({"variant": "tutorial", "reached_s": state["reached_s"], "train_s": state["train_s"], "epoch": state["epoch"],
          "best_acc": state["best"],
          "wall_s": time.perf_counter() - STARTED})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeat", type=int, default=1, help="runs of dlkit (the median is quoted)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args.one, args.target, args.device)
    fashion_dir()
    common = ["--target", str(args.target), "--device", args.device]
    ours = [run_variant("time_to_accuracy.py", *common, "--one", "dlkit") for _ in range(args.repeat)]
    ref = run_variant("time_to_accuracy.py", *common, "--one", "tutorial")
    print(f"Fashion-MNIST, time to test accuracy >= {args.target} on {args.device} (process start to the epoch that reached it)")
    for r in ours + [ref]:
        reached = (f"{r['reached_s']:.1f}s, training {r['train_s']:.1f}s (epoch {r['epoch']})" if r["reached_s"]
                   else "never")
        print(f"  {r['variant']:<9} reached: {reached:<34} best acc {r['best_acc']:.4f}  wall {r['wall_s']:.1f}s  "
              f"peak {r['peak_rss_mb']:.0f} MB")
    times = sorted(r["reached_s"] for r in ours if r["reached_s"])
    if times and ref["reached_s"]:
        print(f"  ratio tutorial/dlkit: {ref['reached_s'] / times[len(times) // 2]:.1f}x")
    elif times:
        print(f"  dlkit median {times[len(times) // 2]:.1f}s; the tutorial loop never reached {args.target} "
              f"(its wall time {ref['wall_s']:.1f}s is {ref['wall_s'] / times[len(times) // 2]:.1f}x)")


if __name__ == "__main__":
    main()
