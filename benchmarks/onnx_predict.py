"""Predict throughput: onnxruntime (a `dlkit export`ed file, via OnnxModel) against PyTorch eager (dlkit's
Predictor), same model and weights, same input, same thread count, for a batch of 64 and for a single image.

Both sides are timed over the same boundaries: a uint8 NxCxHxW tensor at the spec's size in, an NxK tensor of
class probabilities out (PyTorch normalises in Python, the ONNX graph inside itself; both finish with a softmax).
Each side runs in its own fresh process (in one process, each side's idle worker threads spin on the cores the
other side is timed on), after warm-up calls; the sides take turns over --rounds, the order alternating, and the
median over all timed calls is compared. Each model is exported through dlkit's own exporter first, so its
parity check runs too (on Fashion-MNIST's validation images when present).

    python benchmarks/onnx_predict.py [--models lenet-modern,quick] [--repeat 50] [--rounds 2] [--threads N] [--int8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, emit, median, run_variant, usable_cpus  # noqa: E402

SHAPES = {"lenet-modern": (1, 28), "quick": (3, 32), "lenet": (1, 28), "mlp": (1, 28), "softmax": (1, 28)}


def make_run(root: Path, name: str) -> Path:
    """A run folder holding a freshly initialised model (throughput does not depend on the weights' values), whose
    config names Fashion-MNIST so the export is checked on its validation images."""
    import torch

    from dlkit.data import open_source
    from dlkit.data.spec import PreprocessSpec
    from dlkit.models import create_model
    from dlkit.storage import save_tensors

    fashion = Path(os.environ.get("DLKIT_FASHION_DIR", SHARED / "fashion-mnist"))
    classes = tuple(open_source(str(fashion)).classes) if fashion.is_dir() else tuple(map(str, range(10)))
    channels, size = SHAPES.get(name, (3, 32))
    torch.manual_seed(0)
    args = {"in_channels": channels, "num_classes": len(classes), "image_size": size}
    model = create_model(name, **args)
    spec = PreprocessSpec(size, channels, (0.286,) * channels, (0.353,) * channels, classes)
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"data: {fashion}\n")
    save_tensors(run / "checkpoints" / "best.safetensors", model.state_dict(),
                 {"model": name, "model_args": args, "spec": spec.to_dict(), "modality": "image",
                  "task": {"name": "classification"}, "config": {"data": str(fashion)}})
    return run


def one(side: str, target: str, batch: int, threads: int, repeat: int, warmup: int) -> None:
    """In a fresh process: time `repeat` calls of one side and emit every call's seconds."""
    import torch

    torch.set_num_threads(threads)
    if side == "torch":
        import dlkit

        model = dlkit.load(target, device="cpu")
    else:
        from dlkit.export.onnx import OnnxModel

        model = OnnxModel(target, threads=threads)
    spec = model.spec
    x = torch.randint(0, 256, (batch, spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    for _ in range(warmup):
        model.probabilities(x)
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.probabilities(x)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    emit({"times": times, "cpu": cpu})


def export_all(root: Path, models: list[str], int8: bool) -> dict[str, dict[str, Path]]:
    """{model: {"torch": run folder, "fp32": .onnx[, "int8": .onnx]}}, each export checked and reported."""
    import dlkit
    from dlkit.export.onnx import export_onnx

    targets = {}
    for name in models:
        run = make_run(root, name)
        predictor = dlkit.load(run, device="cpu")
        started = time.perf_counter()
        result = export_onnx(predictor)
        print(f"{name}: exported in {time.perf_counter() - started:.1f}s (opset {result.opset}, "
              f"{result.size_bytes / 1024:.0f} KiB), checked on {result.samples} {result.sample_source}: "
              f"max abs diff {result.max_abs_diff:.2g}, top-1 agreement {result.top1_agreement:.2%}", flush=True)
        targets[name] = {"torch": run, "fp32": result.path}
        if int8:
            quantized = export_onnx(predictor, quantize="int8")
            q = quantized.quantized
            change = f"val {q['metric']} {q['fp32']:.4f} -> {q['int8']:.4f}" if "metric" in q else \
                f"top-1 agreement with fp32 {q['top1_agreement']:.2%}"
            print(f"{name} int8: {quantized.size_bytes / 1024:.0f} KiB, {change} (untrained weights)", flush=True)
            targets[name]["int8"] = quantized.path
    return targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet-modern,quick")
    p.add_argument("--batches", default="64,1")
    p.add_argument("--repeat", type=int, default=50, help="timed calls per side per round")
    p.add_argument("--rounds", type=int, default=2, help="turns per side, the order alternating")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=usable_cpus(), help="torch threads = onnxruntime intra-op threads")
    p.add_argument("--int8", action="store_true", help="also time the int8 (dynamic quantization) export")
    p.add_argument("--one", nargs=3, metavar=("SIDE", "TARGET", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args.one[0], args.one[1], int(args.one[2]), args.threads, args.repeat, args.warmup)

    import onnxruntime
    import torch

    print(f"torch {torch.__version__} eager vs onnxruntime {onnxruntime.__version__}, {args.threads} thread(s) each, "
          f"{usable_cpus()} CPU(s), load average {os.getloadavg()[0]:.1f}; median of {args.repeat} x {args.rounds} "
          f"calls per side, uint8 images in, probabilities out", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlkit-bench-onnx-") as tmp:
        targets = export_all(Path(tmp), args.models.split(","), args.int8)
        for name, files in targets.items():
            for batch in map(int, args.batches.split(",")):
                for variant in [v for v in files if v != "torch"]:
                    sides = [("torch", files["torch"]), ("ort", files[variant])]
                    got: dict[str, dict[str, list[float]]] = {"torch": {"times": [], "cpu": []},
                                                               "ort": {"times": [], "cpu": []}}
                    for r in range(args.rounds):
                        for side, target in (sides if r % 2 == 0 else sides[::-1]):
                            one_run = run_variant("onnx_predict.py", "--one", side, str(target), str(batch),
                                                  "--threads", str(args.threads), "--repeat", str(args.repeat),
                                                  "--warmup", str(args.warmup))
                            for key in ("times", "cpu"):
                                got[side][key] += one_run[key]
                    rows.append({"model": name, "onnx": variant, "batch": batch,
                                 **{f"{side}_{key}_s": median(got[side][key]) for side in got for key in got[side]}})
    report(rows)


def report(rows: list[dict]) -> None:
    """Throughput from the wall-clock medians, and the CPU seconds per call beside them: on a shared machine the
    wall clock includes waiting for the cores, CPU time mostly does not (it does include spinning threads)."""
    print(f"\n{'model':<14}{'onnx':<6}{'batch':>6}{'torch img/s':>13}{'ort img/s':>11}{'ort/torch':>11}"
          f"{'torch ms':>10}{'ort ms':>9}{'torch cpu ms':>14}{'ort cpu ms':>12}{'cpu ratio':>11}")
    for r in rows:
        t, o, tc, oc = r["torch_times_s"], r["ort_times_s"], r["torch_cpu_s"], r["ort_cpu_s"]
        print(f"{r['model']:<14}{r['onnx']:<6}{r['batch']:>6}{r['batch'] / t:>13,.0f}{r['batch'] / o:>11,.0f}"
              f"{t / o:>10.2f}x{1e3 * t:>10.3f}{1e3 * o:>9.3f}{1e3 * tc:>14.3f}{1e3 * oc:>12.3f}"
              f"{tc / max(oc, 1e-9):>10.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes on these cores slow both sides)")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
