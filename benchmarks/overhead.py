"""dlkit's trainer against a minimal loop over the same cached uint8 tensors, same model and batch size:
the difference in time per step is the trainer's overhead (callbacks, metrics, progress, checkpoint-free steps).

    python benchmarks/overhead.py --model lenet --batch-size 256 --epochs 2 --repeat 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import fashion_dir, median  # noqa: E402


def minimal_loop(model, batches, spec, epochs: int, lr: float) -> float:
    """Seconds per step of the leanest loop we can write: normalise, forward, loss, backward, step."""
    import torch
    import torch.nn.functional as F

    from dlkit.data.transforms import normalize

    opt = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    model.train()
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, labels in batches:
            loss = F.cross_entropy(model(normalize(images, spec)), labels)
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
    args = p.parse_args()

    import torch

    import dlkit
    from dlkit.data import make_batches, open_source, prepare_data

    fashion = fashion_dir()
    data = prepare_data(open_source(str(fashion)), None, 1, 28)
    steps_per_epoch = -(-len(data.train) // args.batch_size)
    ours, ref = [], []
    for i in range(args.repeat):  # interleaved, so a slow spell of the machine hits both
        torch.manual_seed(i)
        model = dlkit.create_model(args.model, in_channels=1, num_classes=10, image_size=28)
        batches = make_batches(data.train, data.spec, args.batch_size, True, torch.device("cpu"), seed=i)
        ref.append(minimal_loop(model, batches, data.spec, args.epochs, 0.1))
        run = dlkit.train(data=str(fashion), model=args.model, batch_size=args.batch_size, epochs=args.epochs,
                          optimizer="sgd", lr=0.1, tensorboard=False, quiet=True, runs_dir="/tmp/dlkit-bench-runs", seed=i)
        train_s = sum(len(data.train) / r["images_per_s"] for r in run.history)
        ours.append(train_s / (steps_per_epoch * args.epochs))
    m_ours, m_ref = median(ours), median(ref)
    print(f"{args.model}, batch {args.batch_size}, {args.epochs} epoch(s) x {args.repeat} repeats, Fashion-MNIST in memory")
    print(f"  minimal loop   {m_ref * 1000:8.2f} ms/step  (runs: {', '.join(f'{t * 1000:.2f}' for t in ref)})")
    print(f"  dlkit trainer  {m_ours * 1000:8.2f} ms/step  (runs: {', '.join(f'{t * 1000:.2f}' for t in ours)})")
    print(f"  overhead       {(m_ours - m_ref) / m_ref * 100:+8.2f} % of step time (median vs median)")


if __name__ == "__main__":
    main()
