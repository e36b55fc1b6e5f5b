"""The cost of `--explain`: seconds per image of Predictor.explain (Grad-CAM's forward and backward) and of
explain plus drawing the overlay PNG (what `dlkit predict --explain` does per image, less the file write),
against plain Predictor.predict (what `dlkit predict` does per image), same model, same images, same process.

Each model is a freshly initialised registered model at its own default size (the cost does not depend on the
weights' values), in a run folder made here; the images are random RGB PNGs at the model's size. The three
ways take turns image by image (the order rotating), after warm-up calls; medians are compared, of wall time and
of this process's CPU time (which a shared machine disturbs less: run with --threads 1 there, as intra-op threads
waiting on each other for a busy core inflate the wall time of every small op).

    python benchmarks/explain.py [--models quick,resnet18] [--images 20] [--rounds 3] [--threads N] [--method gradcam]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

SIZES = {"quick": 32, "resnet18": 224, "lenet-modern": 28}


def make_run(root: Path, name: str, size: int) -> Path:
    import torch

    from dlkit.data.spec import PreprocessSpec
    from dlkit.models import create_model
    from dlkit.storage import save_tensors

    torch.manual_seed(0)
    args = {"in_channels": 3, "num_classes": 10, "image_size": size}
    spec = PreprocessSpec(size, 3, (0.5,) * 3, (0.25,) * 3, tuple(f"class{i}" for i in range(10)))
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    save_tensors(run / "checkpoints" / "best.safetensors", create_model(name, **args).state_dict(),
                 {"model": name, "model_args": args, "spec": spec.to_dict(), "modality": "image",
                  "task": {"name": "classification"}, "config": {}})
    return run


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"{i}.png" for i in range(n)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return paths


def measure(name: str, images: int, rounds: int, method: str) -> dict[str, float]:
    import torch

    import dlkit

    size = SIZES.get(name, 32)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = dlkit.load(make_run(Path(tmp), name, size), device="cpu")
        paths = make_images(Path(tmp) / "images", images, size)
        ways = {"predict": lambda p: predictor.predict(p),
                "explain (map)": lambda p: predictor.explain(p, method=method),
                "explain + overlay PNG": lambda p: predictor.explain(p, method=method).png()}
        for way in ways.values():  # warm-up: first calls import Captum and matplotlib, find the layer
            way(paths[0])
            way(paths[1])
        seconds: dict[str, list[float]] = {k: [] for k in ways}
        cpu_seconds: dict[str, list[float]] = {k: [] for k in ways}
        for r in range(rounds):
            for i, path in enumerate(paths):
                order = list(ways)[(i + r) % 3:] + list(ways)[:(i + r) % 3]
                for key in order:
                    start, cpu = time.perf_counter(), time.process_time()
                    ways[key](path)
                    seconds[key].append(time.perf_counter() - start)
                    cpu_seconds[key].append(time.process_time() - cpu)
        print(f"{name} ({size} px, layer {predictor.explain_layer()}, {torch.get_num_threads()} thread(s)):")
        return {k: (statistics.median(seconds[k]), statistics.median(cpu_seconds[k])) for k in ways}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="quick,resnet18")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--method", default="gradcam", choices=("gradcam", "guided-gradcam"))
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        result = measure(name, args.images, args.rounds, args.method)
        wall, cpu = result["predict"]
        for key, (w, c) in result.items():
            ratio = "" if key == "predict" else f"  {w / wall:5.2f}x predict (cpu {c / cpu:5.2f}x)"
            print(f"  {key:24s} {1000 * w:8.1f} ms per image, cpu {1000 * c:7.1f} ms{ratio}")


if __name__ == "__main__":
    main()
