"""Images per second of `dlkit train` alone and with N processes (DDP through `dlkit train --nproc-per-node N`),
same data, model, recipe and per-process batch size, measured in the same run; prints both and the ratio.

Weak scaling, as DDP is used: --batch-size is per process, so N processes take N x the images per step. Each side
is its own `dlkit train` subprocess; images/s is the run's own figure from summary.json (the median epoch's images,
all ranks together, over its training seconds), so start-up and decoding are left out on both sides.

Where it runs decides what it shows:
  GPU machine with >= 2 GPUs: N = the GPU count, one GPU per process (NCCL), against one process on one GPU.
  CPU (or a single GPU): N processes (gloo) share the cores with OMP_NUM_THREADS = cpus // N each, against one
    process using all of them (what a user compares), and against one process with one rank's share of the
    threads (the per-rank reference: N x it is perfect scaling over the cores). The same cores either way, so on a
    machine with few cores this shows what DDP costs or gains there, not scaling; on this project's 2-core machine
    there is no spare core for a second process, and the script says so.

    python benchmarks/ddp.py                                   # Fashion-MNIST, lenet-modern, 2 epochs, N = 2
    python benchmarks/ddp.py --processes 4 --model quick --epochs 3 --batch-size 256
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import fashion_dir, recipe_for, usable_cpus  # noqa: E402


def gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def train(processes: int, args, device: str, out: Path, threads: int | None = None) -> dict:
    """One `dlkit train` run (with OMP_NUM_THREADS=threads when given); its summary.json."""
    recipe = recipe_for(args.model)
    cmd = [sys.executable, "-m", "dlkit", "train", "--data", str(args.data), "--model", args.model,
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size or recipe["batch_size"]),
           "--optimizer", recipe["optimizer"], "--lr", str(recipe["lr"]), "--device", device, "--out", str(out),
           "--no-tensorboard", "--no-report", "-q"]
    if processes > 1:
        cmd += ["--nproc-per-node", str(processes)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each side sizes its own threads
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, help="default: the GPU count when there are 2 or more, else 2")
    parser.add_argument("--data", help="default: the shared Fashion-MNIST folder")
    parser.add_argument("--model", default="lenet-modern")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, help="per process (default: the model's benchmark recipe)")
    args = parser.parse_args()
    args.data = args.data or fashion_dir()
    found = gpus()
    device = "cuda" if found >= 2 else "cpu"
    n = args.processes or (found if found >= 2 else 2)
    cpus = usable_cpus()
    print(f"{args.model} on {args.data}, {args.epochs} epoch(s), {device}: {'%d GPUs' % found if found else 'no GPU'}, "
          f"{cpus} usable CPU core(s)")
    if device == "cpu" and cpus < 2 * n:
        print(f"note: {n} processes on {cpus} core(s) share them with no core to spare: this shows DDP's cost here, "
              "scaling cannot be shown on this machine")
    share = max(1, cpus // n)
    with tempfile.TemporaryDirectory() as tmp:
        one = train(1, args, device, Path(tmp) / "one")
        many = train(n, args, device, Path(tmp) / "many")
        rank_alone = train(1, args, device, Path(tmp) / "share", threads=share) if device == "cpu" else None
    print(f"1 process:   {one['images_per_s']:>10,.0f} img/s  ({one['device']}, {cpus if device == 'cpu' else 1} "
          f"{'thread(s)' if device == 'cpu' else 'GPU'})")
    print(f"{n} processes: {many['images_per_s']:>10,.0f} img/s  ({many['device']}"
          + (f", {share} thread(s) each)" if device == "cpu" else ", a GPU each)"))
    print(f"ratio {n} / 1: {many['images_per_s'] / one['images_per_s']:.2f}x  (ideal {n}x with a device per process)")
    if rank_alone:
        print(f"1 process with {share} thread(s), one rank's share: {rank_alone['images_per_s']:,.0f} img/s; "
              f"{n} processes / it: {many['images_per_s'] / rank_alone['images_per_s']:.2f}x (ideal {n}x on "
              f"{n * share} free cores)")
    print(f"val acc after {args.epochs} epoch(s): {one['val_acc']:.4f} alone, {many['val_acc']:.4f} with {n} "
          f"(global batch {n}x larger at the same lr)")


if __name__ == "__main__":
    main()
