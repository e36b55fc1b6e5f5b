"""`dlkit export RUN|CHECKPOINT`: the model as one ONNX file, checked against PyTorch before it is written."""
from __future__ import annotations

import argparse

FORMATS = ("onnx",)


def register(sub: argparse._SubParsersAction) -> None:
    from .main import add_trust_flags, add_tta_flag

    p = sub.add_parser("export", help="export a run or checkpoint to ONNX, checked against PyTorch on validation data")
    p.add_argument("run", metavar="RUN|CHECKPOINT")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="file format (default: onnx)")
    p.add_argument("--out", metavar="FILE", help="where to write (default: RUN/export/model.onnx, or model.int8.onnx)")
    p.add_argument("--quantize", choices=("int8",), help="onnxruntime dynamic quantization; reports the validation "
                   "accuracy and size change")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's; at least 18)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_trust_flags(p)
    add_tta_flag(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from ..export.onnx import export_onnx, format_result, require_extras
    from ..infer import load

    require_extras()  # a missing extra is named before the model loads
    predictor = load(args.run, device="cpu", model_code=args.model_code, trust_code=args.trust_code,
                     tta=args.tta)
    result = export_onnx(predictor, args.out, quantize=args.quantize, opset=args.opset, overwrite=args.overwrite)
    print(json.dumps(result.to_dict()) if args.json else format_result(result))
    return 0
