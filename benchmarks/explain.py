"""The cost of `--explain`: seconds per image of Predictor.explain (Grad-CAM's forward and backward) and of
explain plus drawing the overlay PNG (what `dlkit predict --explain` does per image, less the file write),
against plain Predictor.predict (what `dlkit predict` does per image), same model, same images, same process.

Each model is a freshly initialised registered model at its own default size (the cost does not depend on the
weights' values), in a run folder made here; the images are random RGB PNGs at the model's size. The three
ways take turns image by image (the order rotating), after warm-up calls; medians are compared.

    python benchmarks/explain.py [--models quick,resnet18] [--images 20] [--rounds 3] [--method gradcam]
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
        for r in range(rounds):
            for i, path in enumerate(paths):
                order = list(ways)[(i + r) % 3:] + list(ways)[:(i + r) % 3]
                for key in order:
                    start = time.perf_counter()
                    ways[key](path)
                    seconds[key].append(time.perf_counter() - start)
        print(f"{name} ({size} px, layer {predictor.explain_layer()}):")
        return {k: statistics.median(v) for k, v in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="quick,resnet18")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="gradcam", choices=("gradcam", "guided-gradcam"))
    args = parser.parse_args()
    for name in args.models.split(","):
        result = measure(name, args.images, args.rounds, args.method)
        base = result["predict"]
        for key, value in result.items():
            ratio = "" if key == "predict" else f"  {value / base:.2f}x predict"
            print(f"  {key:24s} {1000 * value:8.1f} ms per image{ratio}")


if __name__ == "__main__":
    main()
