"""ONNX export: a trained model as one self-contained .onnx file, checked against PyTorch before it is written.

export_onnx traces the model with the dynamo exporter (batch dimension dynamic, traced at batch >= 2, eval mode,
weights inside the file), writes what a consumer needs into the file's metadata_props (JSON strings: modality,
task, classes, the preprocessing spec, target scaling, opset, model, training metrics), then refuses to write
unless onnx.checker passes and onnxruntime matches PyTorch on real validation samples (max abs difference of the
outputs <= 1e-4 in fp32, same top-1). `quantize="int8"` adds onnxruntime's dynamic quantization and measures
the accuracy change on the validation split (export/quantize.py). OnnxModel (export/runtime.py) runs the result.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .graphs import CPU, MODALITIES, task_of
from .quantize import quantizer_for
from .runtime import CHUNK, EXTRAS_HINT, FORMAT, FORMAT_VERSION, OnnxModel, checked_bytes, run_bytes

__all__ = ["ExportResult", "OnnxModel", "export_onnx", "format_result"]

TOLERANCE = 1e-4          # max abs difference of fp32 outputs, ONNX Runtime vs PyTorch
MIN_OPSET = 18            # the dynamo exporter's lowest opset
CHECK_SAMPLES = 256       # validation samples compared with PyTorch
QUANTIZE_SAMPLES = 10000  # validation samples the quantized accuracy is measured on (at most)


@dataclass
class ExportResult:
    """What export_onnx wrote and how it checked it. `quantized` holds the int8 figures when asked for."""

    path: Path
    opset: int
    modality: str
    task: str
    samples: int                        # inputs compared with PyTorch
    sample_source: str                  # "validation images of DATA", or "random images: ..." and why
    max_abs_diff: float                 # ONNX Runtime vs PyTorch, fp32 outputs
    top1_agreement: float | None        # fraction of samples with the same top class (None for regression)
    size_bytes: int                     # of the file written
    export_s: float                     # tracing and conversion
    check_s: float                      # onnx.checker, onnxruntime runs, comparison (and quantization)
    tolerance: float = TOLERANCE
    quantized: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    tta: str = "none"                   # test-time augmentation inside the graph

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def export_onnx(predictor, out: str | Path | None = None, *, quantize: str | None = None, opset: int | None = None,
                overwrite: bool = False, check_samples: int = CHECK_SAMPLES, tolerance: float = TOLERANCE,
                trust_code: bool = False, model_code: str | Path | None = None, tta: str | None = None) -> ExportResult:
    """Export a run, a checkpoint or a loaded model to ONNX, check it against PyTorch, then write it atomically.

    Args:
        predictor: a Run (dlkit.train's), a run folder or checkpoint file (loaded on the CPU, with trust_code /
            model_code as for dlkit.load), or a Predictor or TablePredictor (one model, not a CV folder's folds).
        out: the .onnx file (default <run>/export/model.onnx, or model.int8.onnx when quantized).
        quantize: None, or "int8" (onnxruntime dynamic quantization; the fp32 graph is still checked first).
        opset: ONNX opset (default: the exporter's); at least 18.
        overwrite: replace an existing file.
        check_samples: validation samples compared with PyTorch.
        tolerance: the largest max abs difference of the fp32 outputs accepted.
        tta: a run folder's or checkpoint's test-time augmentation (default the run's own; "none": without); the
            graph then holds the views and outputs log mean probabilities (metadata "tta" says which).
    Returns: ExportResult (path, opset, max_abs_diff, top1_agreement, size_bytes, quantized figures, ...).
    Raises: UserError for a bad argument, a missing extra, an existing file, or a failed check (nothing written).

    Example: `dlkit.export_onnx("runs/x", "model.onnx")`, or `dlkit.export_onnx(dlkit.load("runs/x"))`
    """
    onnx = require_extras()
    if hasattr(predictor, "dir") and hasattr(predictor, "trusted_code"):  # a Run that dlkit.train returned
        trust_code = trust_code or predictor.trusted_code
        predictor = predictor.dir
    if isinstance(predictor, (str, Path)):
        from ..infer import load

        predictor = load(predictor, device="cpu", model_code=model_code, trust_code=trust_code, tta=tta)
    elif tta is not None and tta != getattr(predictor, "tta", "none"):
        raise UserError(f"tta={tta!r} goes with a run folder or checkpoint; this predictor was loaded with tta "
                        f"{getattr(predictor, 'tta', 'none')!r}: dlkit.load(path, tta={tta!r}) first")
    quantizer = quantizer_for(quantize)
    opset = _check_opset(opset, onnx)
    if len(getattr(predictor, "models", ())) > 1:
        raise UserError("a CV folder holds one model per fold; export a fold's run folder or the refit run")
    path = _out_path(predictor, out, quantize, overwrite)

    kind, task = MODALITIES[predictor.modality], task_of(predictor)
    model, spec = _cpu_copy(getattr(predictor, "forward", predictor.model)), predictor.spec  # TTA in the graph
    samples = kind.samples(predictor.meta, spec, max(check_samples, QUANTIZE_SAMPLES if quantizer else 0))
    started = time.perf_counter()
    proto = _trace(kind, model, spec, samples.inputs, opset, predictor.meta.get("model", "the model"))
    export_s = time.perf_counter() - started
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    onnx.helper.set_model_props(proto, _metadata(predictor, kind, opset))
    proto.producer_name, proto.producer_version = "dlkit", _version()
    data = checked_bytes(onnx, proto)

    started = time.perf_counter()
    check = samples.inputs[:check_samples]
    diff, agreement = _parity(kind, model, spec, data, check, tolerance, task.name == "classification")
    quantized = None
    if quantizer:
        data, quantized = quantizer(data, proto, predictor, samples, onnx)
    notes = [] if samples.labels is not None else [
        "the check ran on random inputs, not real samples; export where the run's data is readable for a real one"]
    result = ExportResult(path, opset, predictor.modality, task.name, len(check), samples.source, diff, agreement,
                          len(data), round(export_s, 2), round(time.perf_counter() - started, 2), tolerance,
                          quantized, notes, getattr(predictor, "tta", "none"))
    from ..storage import atomic_write_bytes

    atomic_write_bytes(path, data)
    return result


def _parity(kind, model, spec, data: bytes, inputs: torch.Tensor, tolerance: float,
            classes: bool) -> tuple[float, float | None]:
    """(max abs diff, top-1 agreement) of onnxruntime against PyTorch on `inputs`; past tolerance, a UserError."""
    reference = torch.cat([kind.reference(model, spec, inputs[s:s + CHUNK]) for s in range(0, len(inputs), CHUNK)])
    diff, agreement, flipped = compare(reference, run_bytes(data, inputs), tolerance, classes)
    if not diff <= tolerance or flipped:  # written so that a NaN difference fails too
        raise UserError(f"the ONNX graph does not match PyTorch on {len(inputs)} samples (max abs diff {diff:.3g}, "
                        f"tolerance {tolerance:g}; top-1 agreement {_pct(agreement)}); nothing was written; "
                        "try another --opset, or report it with the model name")
    return diff, agreement


# ---- pieces --------------------------------------------------------------------------------------------------------

def require_extras():
    """The onnx module, or a UserError naming the pip command when an export extra is missing."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as e:
        raise UserError(f"ONNX export needs {e.name or 'onnx'}: {EXTRAS_HINT}") from None
    return onnx


def _check_opset(opset: int | None, onnx) -> int | None:
    if opset is None:
        return None
    highest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= highest:
        raise UserError(f"--opset must be between {MIN_OPSET} (the dynamo exporter's lowest) and {highest} "
                        f"(onnx {onnx.__version__}'s highest); got {opset}")
    return opset


def _out_path(predictor, out: str | Path | None, quantize: str | None, overwrite: bool) -> Path:
    path = Path(out) if out else default_out(predictor.path, quantize)
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; name a file, e.g. {path / 'model.onnx'}")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; choose another --out or pass --overwrite")
    return path


def default_out(checkpoint: Path | None, quantize: str | None) -> Path:
    """<run>/export/model.onnx for a run's checkpoint; export/ beside a loose checkpoint file."""
    from ..infer.predictor import run_dir_of

    if checkpoint is None:
        raise UserError("this model was not loaded from a file; pass out, e.g. export_onnx('model.onnx')")
    folder = (run_dir_of(Path(checkpoint)) or Path(checkpoint).parent) / "export"
    return folder / (f"model.{quantize}.onnx" if quantize else "model.onnx")


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model on the CPU in eval mode (a copy when it lives elsewhere: the predictor keeps its device)."""
    import copy

    if any(p.device != CPU for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
    return model.eval()


def _trace(kind, model: torch.nn.Module, spec, inputs: torch.Tensor, opset: int | None, name: str):
    """The ModelProto of kind's graph, batch dimension dynamic. Traced at batch 2 or more: a batch of 1 would be
    specialised into the graph as a constant."""
    example = inputs[:2] if len(inputs) >= 2 else inputs.repeat(2, *([1] * (inputs.ndim - 1)))
    graph = kind.graph(model, spec)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(graph, (example,), dynamo=True, external_data=False, opset_version=opset,
                                    input_names=[kind.input_name], output_names=[_output_name(kind, spec)],
                                    dynamic_shapes={kind.input_name: {0: batch}}, verbose=False)
        return program.model_proto
    except Exception as e:  # torch.export/onnxscript raise many types; the user needs the first line and a way out
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"could not export {name} to ONNX ({type(e).__name__}: {first}); its forward must be "
                        "traceable by torch.export (no data-dependent Python control flow)") from e


def _output_name(kind, spec) -> str:
    return getattr(kind, "output_name", None) or ("logits" if spec.task == "classification" else "scaled_prediction")


def compare(reference: torch.Tensor, got: torch.Tensor, tolerance: float,
            classes: bool) -> tuple[float, float | None, int]:
    """(max abs diff, top-1 agreement, top-1 flips that are not ties). A flip between two classes whose reference
    scores are within the tolerance is a tie, not a failure."""
    if got.shape != reference.shape:
        return float("inf"), 0.0 if classes else None, 0
    diff = float((got - reference).abs().max()) if reference.numel() else 0.0
    if not classes:
        return diff, None, 0
    mine, theirs = reference.argmax(1), got.argmax(1)
    same = mine == theirs
    gap = reference.gather(1, mine[:, None]) - reference.gather(1, theirs[:, None])
    flips = int(((~same) & (gap.squeeze(1) > tolerance)).sum())
    return diff, float(same.float().mean()) if len(same) else 1.0, flips


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _version() -> str:
    from .. import __version__

    return __version__


# ---- metadata ------------------------------------------------------------------------------------------------------

def _metadata(predictor, kind, opset: int) -> dict[str, str]:
    """metadata_props: every value a JSON string, enough to use the file without dlkit or the checkpoint."""
    import onnxruntime

    meta, spec = predictor.meta, predictor.spec
    task = meta.get("task") or {"name": "classification"}
    inputs, output = kind.describe(spec, task)
    values = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dlkit_version": _version(),
        "modality": predictor.modality, "task": task, "classes": list(predictor.classes),
        "spec": spec.to_dict(), "target_scale": task.get("scale") or getattr(spec, "target_scale", None) or {},
        "opset": opset, "model": meta.get("model"), "model_args": meta.get("model_args", {}),
        "tta": getattr(predictor, "tta", "none"),
        "input": inputs, "output": output, "metrics": training_metrics(predictor),
        "checkpoint": {"file": Path(predictor.path).name if predictor.path else None, "sha256": meta.get("sha256"),
                       "epoch": meta.get("epoch"), "step": meta.get("step")},
        "exported_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                          "python": platform.python_version()},
    }
    if "model_source" in meta:
        values["model_source"] = meta["model_source"]
    return {key: json.dumps(value, default=str) for key, value in values.items()}


def training_metrics(predictor) -> dict[str, Any]:
    """The run's summary.json figures when it has one, else the checkpoint's own record."""
    from ..infer.predictor import run_dir_of

    run = run_dir_of(Path(predictor.path)) if predictor.path else None
    summary_file = run / "summary.json" if run else None
    if summary_file and summary_file.is_file():
        try:
            s = json.loads(summary_file.read_text())
            keep = ("data", "monitor", "best_value", "best_epoch", "best_metrics", "epochs", "train_samples",
                    "val_samples", "test_metrics")
            return {k: s[k] for k in keep if k in s}
        except (OSError, json.JSONDecodeError):
            pass
    meta = predictor.meta
    return {k: meta[k] for k in ("monitor", "best_value", "best_epoch", "metrics") if k in meta}


# ---- report --------------------------------------------------------------------------------------------------------

def format_result(r: ExportResult) -> str:
    """The lines `dlkit export` prints."""
    lines = [f"exported {r.modality} {r.task} model to {r.path}",
             f"  opset:            {r.opset}",
             f"  checked on:       {r.samples} {r.sample_source}",
             f"  max abs diff:     {r.max_abs_diff:.3g} (onnxruntime vs PyTorch, fp32; tolerance {r.tolerance:g})",
             *([f"  top-1 agreement:  {_pct(r.top1_agreement)}"] if r.top1_agreement is not None else []),
             *([f"  test-time aug:    {r.tta}, inside the graph (its output is the log of the views' mean "
                f"probabilities)"] if r.tta != "none" else []),
             f"  size:             {_size(r.size_bytes)}",
             f"  time:             export {r.export_s:.1f}s, checks {r.check_s:.1f}s"]
    q = r.quantized
    if q:
        lines.append(f"  int8:             {_size(q['fp32_size_bytes'])} -> {_size(q['size_bytes'])} "
                     f"({q['size_ratio']:.0%} of fp32)")
        if "metric" in q:
            lines.append(f"  {'val ' + q['metric'] + ':':<18}fp32 {q['fp32']:.4f} -> int8 {q['int8']:.4f} "
                         f"({q['change']:+.4f}) on {q['samples']} samples")
        if "top1_agreement" in q:
            lines.append(f"  int8 vs fp32 top-1 agreement: {_pct(q['top1_agreement'])}")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"
