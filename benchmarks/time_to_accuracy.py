"""Seconds from process start to a test accuracy on Fashion-MNIST: the tutorial loop with the d2l LeNet recipe
against dlkit with its own recipe, each run --repeat times in fresh processes, medians compared.

The recipes differ on purpose, so the ratio measures recipe and toolkit together ("how soon does each get there?"),
not the toolkit alone (benchmarks/throughput.py and overhead.py compare like with like):
  tutorial: LeNet (sigmoid, average pooling), SGD lr 0.9, batch 256, fp32, 10 epochs;
  dlkit:    BEST below (on the CPU: BatchNorm LeNet, AdamW one-cycle, bf16 where the CPU has it natively), at most
            its own epochs, stopped by --stop-at as soon as it reaches the target.
Both are timed alike: from their own process start (interpreter start-up and imports included) to the end of the
validation pass that first reached the target, validating once per epoch.

    python benchmarks/time_to_accuracy.py                 # target: each tutorial run's own final accuracy
    python benchmarks/time_to_accuracy.py --target 0.90   # a fixed target ("not reached" where a side never gets there)

--wall answers "how long until my model is good enough?" as a person at the shell sees it (issue 14's goal: >= 10x):
each repeat runs the tutorial loop for all its epochs, then `dlkit train` (the CLI, report written, TensorBoard off)
with --stop-at <that run's final accuracy> and --val-every N steps; both are timed by this parent from spawning the
process to its exit, and the ratio of the median wall times is printed.

    python benchmarks/time_to_accuracy.py --wall [--val-every 20] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ProcessClock, emit, fashion_dir, median, run_variant, torchvision_root  # noqa: E402

# dlkit's recipe for this device; --amp gives bf16 autocast where it pays (CUDA, CPUs with AMX/AVX512-BF16), else fp32
BEST = {"cpu": dict(model="lenet-modern", optimizer="adamw", lr=0.01, batch_size=256, epochs=4,
                    schedule="onecycle", weight_decay=0.05, amp=True),
        "cuda": dict(model="resnet18", optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, batch_size=512,
                     epochs=8, schedule="onecycle", weight_decay=5e-4, augment="light", label_smoothing=0.1, amp=True)}
TUTORIAL = "LeNet, SGD lr 0.9, batch 256, fp32"
# --wall: dlkit stops as soon as it is good enough, so its schedule need not span the tutorial's epochs
WALL = dict(BEST["cpu"], epochs=2)


def run_dlkit(target: float, device: str) -> None:
    import dlkit

    clock = ProcessClock()
    run = dlkit.train(data=str(fashion_dir()), device=device, tensorboard=False, report=False, quiet=True,
                      runs_dir="/tmp/dlkit-bench-runs", stop_at=target, **BEST[device])
    stopped = run.summary.get("stopped") or {}
    epochs = [(r["epoch"], r["val_acc"]) for r in run.history]
    emit({"variant": "dlkit", "reached_s": stopped.get("seconds_from_process_start"), "epoch": stopped.get("epoch"),
          "epochs": epochs, "best_acc": max(acc for _, acc in epochs), "precision": run.summary["device"],
          "wall_s": clock()})


def run_tutorial(epochs: int, device: str) -> None:
    import torch

    clock = ProcessClock()
    import dlkit  # for the model only: the same LeNet dlkit registers
    from tutorial import d2l_loaders, train_ch6

    torch.manual_seed(0)
    log = []  # (epoch, test accuracy, seconds from process start at the end of that validation)
    train_iter, test_iter = d2l_loaders(torchvision_root(fashion_dir()), 256)
    model = dlkit.create_model("lenet", in_channels=1, num_classes=10, image_size=28)
    train_ch6(model, train_iter, test_iter, epochs, 0.9, torch.device(device),
              on_epoch=lambda epoch, acc: log.append((epoch, acc, clock())))
    emit({"variant": "tutorial", "log": log, "final_acc": log[-1][1], "best_acc": max(a for _, a, _ in log),
          "precision": f"{device} fp32", "wall_s": clock()})


def first_reached(log: list, target: float) -> tuple[float | None, int | None]:
    """(seconds, epoch) of the first validation at or above target in a tutorial log, or (None, None)."""
    return next(((s, epoch) for epoch, acc, s in log if acc >= target), (None, None))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="tutorial",
                   help="a test accuracy, or 'tutorial': each tutorial run's final accuracy (default; the fair ratio)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeat", type=int, default=3, help="runs of each side (medians are compared)")
    p.add_argument("--tutorial-epochs", type=int, default=10)
    p.add_argument("--wall", action="store_true", help="process walls: tutorial's full run, then dlkit --stop-at")
    p.add_argument("--val-every", type=int, default=20, help="--wall: dlkit validates every N steps")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.wall:
        return wall_mode(args)
    if args.one == "dlkit":
        return run_dlkit(float(args.target), args.device)
    if args.one == "tutorial":
        return run_tutorial(args.tutorial_epochs, args.device)
    fashion_dir()
    rows = []
    for _ in range(args.repeat):  # pairs, interleaved, so a slow spell of the machine hits both sides
        tut = run_variant("time_to_accuracy.py", "--one", "tutorial", "--device", args.device,
                          "--tutorial-epochs", str(args.tutorial_epochs))
        target = tut["final_acc"] if args.target == "tutorial" else float(args.target)
        ours = run_variant("time_to_accuracy.py", "--one", "dlkit", "--device", args.device, "--target", str(target))
        rows.append((target, tut, ours))
    report(rows, args)


def wall_mode(args) -> None:
    import json
    import subprocess
    import tempfile
    import time

    recipe = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in WALL.items()]
    tut_walls, our_walls = [], []
    print(f"Fashion-MNIST on cpu, {args.repeat} pair(s): wall seconds from spawning each process to its exit\n"
          f"  tutorial: {TUTORIAL}, {args.tutorial_epochs} epochs\n"
          f"  dlkit:    dlkit train {' '.join(recipe)} --val-every {args.val_every} --no-tensorboard "
          "--stop-at <the tutorial's final accuracy>")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            start = time.perf_counter()
            tut = run_variant("time_to_accuracy.py", "--one", "tutorial", "--tutorial-epochs", str(args.tutorial_epochs))
            tut_walls.append(time.perf_counter() - start)
            target = tut["final_acc"]
            command = [sys.executable, "-m", "dlkit", "train", "--data", str(fashion_dir()), *recipe,
                       "--val-every", str(args.val_every), "--stop-at", f"{target:.4f}", "--no-tensorboard",
                       "--out", f"{tmp}/run{r}", "--json", "-q"]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            our_walls.append(time.perf_counter() - start)
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            stopped = summary.get("stopped") or {}
            where = (f"stopped at step {stopped['step']} with {summary['best_value']:.4f}" if stopped
                     else f"did not reach it (best {summary['best_value']:.4f})")
            print(f"  target {target:.4f}  tutorial {tut_walls[-1]:.1f}s  |  dlkit {our_walls[-1]:.1f}s, {where}",
                  flush=True)
    t, o = median(tut_walls), median(our_walls)
    print(f"  median: tutorial {t:.1f}s, dlkit {o:.1f}s: dlkit was done {t / o:.1f}x sooner (goal >= 10x)")


def report(rows: list, args) -> None:
    recipe = BEST[args.device]
    print(f"Fashion-MNIST on {args.device}, {len(rows)} run(s) of each side: seconds from process start to the "
          "validation that first reached the target (both validate once per epoch)")
    print(f"  the recipes differ, so this measures recipe and toolkit together:\n"
          f"    tutorial: {TUTORIAL}, {args.tutorial_epochs} epochs\n"
          f"    dlkit:    {recipe['model']}, {recipe['optimizer']} lr {recipe['lr']:g} {recipe['schedule']}, batch "
          f"{recipe['batch_size']}, {rows[0][2]['precision']}, at most {recipe['epochs']} epochs, --stop-at the target")
    tut_times, our_times = [], []
    for target, tut, ours in rows:
        tut_s, tut_epoch = first_reached(tut["log"], target)
        tut_times.append(tut_s)
        our_times.append(ours["reached_s"])
        theirs = _reached(tut_s, tut_epoch, args.tutorial_epochs, tut["best_acc"])
        mine = _reached(ours["reached_s"], ours["epoch"], recipe["epochs"], ours["best_acc"])
        print(f"  target {target:.4f}  tutorial {theirs}, process {tut['wall_s']:.1f}s  |  "
              f"dlkit {mine}, process {ours['wall_s']:.1f}s", flush=True)
    if all(t is not None for t in tut_times + our_times):
        t, o = median(tut_times), median(our_times)
        print(f"  median: tutorial {t:.1f}s, dlkit {o:.1f}s: dlkit got there {t / o:.1f}x sooner")
    else:
        missing = [name for name, times in (("tutorial", tut_times), ("dlkit", our_times)) if None in times]
        print(f"  no ratio: {' and '.join(missing)} did not reach the target in every run")


def _reached(seconds, epoch, epochs: int, best: float) -> str:
    if seconds is None:
        return f"not reached in {epochs} epochs (best {best:.4f})"
    return f"{seconds:.1f}s (epoch {epoch:g})"


if __name__ == "__main__":
    main()
