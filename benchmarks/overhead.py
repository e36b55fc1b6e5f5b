"""dlkit's trainer against a minimal loop over the same cached uint8 tensors, same model and batch size: the
difference in time per step is the trainer's overhead (callbacks, metrics, progress, checkpoint-free steps).

Only the loop around the step differs: before any timing the process gets the settings dlkit applies (CPU threads,
the allocator's keep-freed-memory), and the minimal loop uses the memory format and autocast the dlkit run chose
(its summary's memory_format, not a second probe). Both are timed over their training steps alone. The two run
in alternating order (dlkit first in odd repeats), so neither always inherits the other's warm heap.

    python benchmarks/overhead.py --model lenet --batch-size 256 --epochs 2 --repeat 3 [--amp]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import fashion_dir, median  # noqa: E402


def minimal_loop(model, batches, spec, epochs: int, lr: float, amp: bool, channels_last: bool) -> float:
    """Seconds per step of the leanest loop we can write: normalise, forward, loss, backward, step."""
    import torch
    import torch.nn.functional as F

    from dlkit.data.transforms import normalize
    from dlkit.device import autocast_for

    autocast = autocast_for(torch.device("cpu"), amp)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    model.train()
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, labels in batches:
            with autocast():
                loss = F.cross_entropy(model(normalize(images, spec).contiguous(memory_format=fmt)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lenet")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--amp", action="store_true", help="both loops in bf16 autocast (where the CPU has it natively)")
    args = p.parse_args()

    import torch

    import dlkit
    from dlkit.data import make_batches, open_source, prepare_data
    from dlkit.device import configure_backends, device_label

    configure_backends(torch.device("cpu"), deterministic=False)  # what dlkit.train does, before anything is timed
    fashion = fashion_dir()
    data = prepare_data(open_source(str(fashion)), None, 1, 28)
    steps_per_epoch = -(-len(data.train) // args.batch_size)
    ours, ref, formats = [], [], []  # formats: the memory format each dlkit run chose

    def run_dlkit(i: int) -> None:
        run = dlkit.train(data=str(fashion), model=args.model, batch_size=args.batch_size, epochs=args.epochs,
                          optimizer="sgd", lr=0.1, tensorboard=False, report=False, quiet=True,
                          runs_dir="/tmp/dlkit-bench-runs", seed=i, amp=args.amp)
        train_s = sum(len(data.train) / r["images_per_s"] for r in run.history)
        ours.append(train_s / (steps_per_epoch * args.epochs))
        formats.append(run.summary["memory_format"])

    def run_minimal(i: int) -> None:
        torch.manual_seed(i)
        model = dlkit.create_model(args.model, in_channels=1, num_classes=10, image_size=28)
        batches = make_batches(data.train, data.spec, args.batch_size, True, torch.device("cpu"), seed=i)
        channels_last = formats[-1] == "channels_last"  # the latest run's choice
        ref.append(minimal_loop(model, batches, data.spec, args.epochs, 0.1, args.amp, channels_last))

    for i in range(args.repeat):  # interleaved, so a slow spell of the machine hits both
        if i % 2 == 0:  # so the first run's choice of memory format is known before the minimal loop needs it
            run_dlkit(i)
            run_minimal(i)
        else:
            run_minimal(i)
            run_dlkit(i)
    m_ours, m_ref = median(ours), median(ref)
    print(f"{args.model}, batch {args.batch_size}, {args.epochs} epoch(s) x {args.repeat} repeats, Fashion-MNIST in "
          f"memory, {device_label(torch.device('cpu'), args.amp)} on both sides; memory format as dlkit chose it: "
          f"{', '.join(formats)}")
    print(f"  minimal loop   {m_ref * 1000:8.2f} ms/step  (runs: {', '.join(f'{t * 1000:.2f}' for t in ref)})")
    print(f"  dlkit trainer  {m_ours * 1000:8.2f} ms/step  (runs: {', '.join(f'{t * 1000:.2f}' for t in ours)})")
    print(f"  overhead       {(m_ours - m_ref) / m_ref * 100:+8.2f} % of step time (median vs median)")


if __name__ == "__main__":
    main()
