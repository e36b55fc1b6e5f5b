"""--quantize for ONNX export: onnxruntime's dynamic quantization, and what it costs on the validation split."""
from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .graphs import CheckSamples

QUANTIZED_OPS = ("MatMul", "Gemm")  # --quantize int8: the linear layers (see quantize_int8 for why not Conv)


# ---- quantization --------------------------------------------------------------------------------------------------

def quantize_int8(data: bytes, proto, predictor, samples: CheckSamples, onnx) -> tuple[bytes, dict[str, Any]]:
    """onnxruntime dynamic quantization of the linear layers (int8 weights, activations quantized on the fly), and
    what it costs: the validation metric before and after, and the size before and after.

    Convolutions stay fp32: onnxruntime runs a dynamically quantized convolution (ConvInteger) far slower than the
    fp32 one (LeNet-modern on Fashion-MNIST, 1 thread, batch 64: 6.8 ms against 1.6 ms; linear layers only: 1.5 ms),
    while the linear layers hold most of the bytes of the curriculum's small networks (LeNet-modern 268 -> 94 KiB
    this way, 84 KiB with its convolutions too)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .graphs import task_of
    from .runtime import checked_bytes, run_bytes

    with tempfile.TemporaryDirectory(prefix="dlkit-export-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(data)
        with _quiet_advice():
            quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS))
        quantized = onnx.load(str(int8))
    props = {p.key: p.value for p in proto.metadata_props}
    props["quantization"] = json.dumps({"scheme": "int8", "method": "onnxruntime.quantization.quantize_dynamic",
                                        "ops": list(QUANTIZED_OPS)})
    onnx.helper.set_model_props(quantized, props)
    packed = checked_bytes(onnx, quantized)
    before, after = run_bytes(data, samples.inputs), run_bytes(packed, samples.inputs)
    figures = {"scheme": "int8", "fp32_size_bytes": len(data), "size_bytes": len(packed),
               "size_ratio": len(packed) / len(data), "samples": len(samples.inputs)}
    task = task_of(predictor)
    if task.name == "classification":
        figures["top1_agreement"] = float((before.argmax(1) == after.argmax(1)).float().mean())
    if samples.labels is not None:
        metric, score = SCORES[task.name]
        figures.update({"metric": metric, "fp32": score(task, before, samples.labels),
                        "int8": score(task, after, samples.labels)})
        figures["change"] = figures["int8"] - figures["fp32"]
    return packed, figures


@contextlib.contextmanager
def _quiet_advice():
    """quantize_dynamic logs advice to run its pre-processing (symbolic shape inference, ~6 s even for LeNet; the
    quantized graphs run and are measured without it) on the root logger: drop that one record."""
    import logging

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _accuracy(task, outputs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((outputs.argmax(1) == labels).float().mean())


def _rmse(task, outputs: torch.Tensor, labels: torch.Tensor) -> float:
    from ..tasks import regression_metrics

    return regression_metrics(task.values(outputs), task.scale.decode(labels))["rmse"]


SCORES = {"classification": ("accuracy", _accuracy), "regression": ("rmse", _rmse)}  # task -> validation metric
QUANTIZERS = {"int8": quantize_int8}


def quantizer_for(name: str | None):
    """The --quantize scheme's function, None for none; a clear error for an unknown one."""
    if name is None:
        return None
    if name not in QUANTIZERS:
        raise UserError(f"--quantize {name!r} is not supported; choose {', '.join(QUANTIZERS)}")
    return QUANTIZERS[name]
