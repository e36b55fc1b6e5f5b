"""`dlkit eval RUN|CHECKPOINT`: a trained model's metrics on a data split (the run's own, or other data)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from .main import add_device_flag, add_max_image_pixels_flag, add_trust_flags, add_tta_flag  # shared

    p = sub.add_parser("eval", help="evaluate a run or checkpoint on a data split")
    p.add_argument("run", metavar="RUN|CHECKPOINT")
    p.add_argument("--data", help="dataset to evaluate on (default: the run's)")
    p.add_argument("--data-dir", help="where a built-in dataset's files are")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--batch-size", type=int, default=256)
    add_device_flag(p)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_max_image_pixels_flag(p)
    add_trust_flags(p)
    add_tta_flag(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..data.images import set_max_image_pixels
    from ..evaluation import evaluate_checkpoint, format_report

    set_max_image_pixels(args.max_image_pixels)
    result = evaluate_checkpoint(args.run, data=args.data, split=args.split, data_dir=args.data_dir,
                                 batch_size=args.batch_size, device=args.device,
                                 trust_code=args.trust_code, model_code=args.model_code, tta=args.tta)
    if args.json:
        print(json.dumps(result))
        return 0
    tta = f", test-time augmentation {result['tta']}" if result.get("tta", "none") != "none" else ""
    print(f"{result['checkpoint']} on {result['data']} ({result['split']}){tta}")
    for note in result["notes"]:
        print(f"note: {note}")
    if result["task"] == "regression":
        print(f"rows {result['samples']}  " + "  ".join(f"{k} {result[k]:.5g}" for k in ("rmse", "mae", "r2", "rmsle")
                                                        if k in result))
        return 0
    names = [row["class"] for row in result["per_class"]]
    print(format_report(result, names))
    print(f"confusion matrix saved: {result['confusion_png']}")
    return 0
