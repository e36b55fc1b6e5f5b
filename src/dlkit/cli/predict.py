"""`dlkit predict RUN|CHECKPOINT FILE_OR_DIR...`: the classes of image files, or a table's predictions as CSV."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from .explaining import add_explain_flags
    from .main import add_device_flag, add_max_image_pixels_flag, add_trust_flags, add_tta_flag  # shared

    p = sub.add_parser("predict", help="predict the class of image files, or the target of a table's rows")
    p.add_argument("run", metavar="RUN|CHECKPOINT", help="a run folder (its best checkpoint), a checkpoint or a CV "
                   "folder")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="images or folders of them; or one table file")
    p.add_argument("--topk", type=int, default=3, metavar="K", help="image models: the K most likely classes "
                   "shown for each image (default: 3)")
    add_device_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image (a JSON array of rows for a table)")
    p.add_argument("--out", metavar="FILE", help="write the predictions CSV here: for images path, class, "
                   "probability and the next --topk classes; for tables the id column and the prediction")
    p.add_argument("--id-column", help="table models: the column written beside each prediction (default: the "
                   "identifier column found in training)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_trust_flags(p)
    add_max_image_pixels_flag(p)
    add_explain_flags(p)
    add_tta_flag(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..data.images import ImageError, set_max_image_pixels
    from ..infer import load
    from ..infer.predictor import expand_inputs
    from ..infer.tabular import refuse_existing, write_predictions

    if args.topk < 1:
        raise UserError(f"--topk must be at least 1 (got {args.topk})")
    set_max_image_pixels(args.max_image_pixels)
    predictor = load(args.run, device=args.device, model_code=args.model_code, trust_code=args.trust_code,
                     tta=args.tta)
    if predictor.modality == "table":
        return _predict_table(predictor, args)
    failed, rows = 0, []
    if args.out:
        refuse_existing(Path(args.out), args.overwrite)  # before the work, not after it
    skipped: list[str] = []
    paths = expand_inputs(args.inputs, skipped)
    for note in skipped:  # as training warns: what a folder held besides images, named
        print(f"warning: {note}", file=sys.stderr)
    explainer = _image_explainer(predictor, args, paths)
    for path in paths:
        try:
            top = explainer.predict(path, args.topk) if explainer else predictor.predict(path, topk=args.topk)
        except ImageError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        overlay = {"explanation": str(explainer.written[path])} if explainer else {}
        if args.out:
            rows.append(image_row(path, top) | overlay)
        if args.json:
            print(json.dumps({"file": str(path), "predictions": [{"class": c, "probability": p} for c, p in top]}
                             | overlay))
        elif not args.out:
            print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in top)
                  + (f" -> {overlay['explanation']}" if overlay else ""))
    if args.out and rows:
        import pandas as pd

        written = write_predictions(pd.DataFrame(rows), Path(args.out), args.overwrite)
        print(f"wrote {len(rows)} prediction(s) to {written}", file=sys.stderr if args.json else sys.stdout)
    return 2 if failed else 0


def _image_explainer(predictor, args: argparse.Namespace, paths: list[Path]):
    from .explaining import ImageExplainer

    return ImageExplainer(predictor, args, paths) if args.explain else None


def image_row(path: Path, top: list[tuple[str, float]]) -> dict:
    """One CSV row: the file, its class and probability, then the runners-up as class_2, probability_2, ..."""
    row = {"path": str(path), "class": top[0][0], "probability": top[0][1]}
    for rank, (name, probability) in enumerate(top[1:], 2):
        row[f"class_{rank}"], row[f"probability_{rank}"] = name, probability
    return row


def _predict_table(predictor, args: argparse.Namespace) -> int:
    from ..infer.tabular import write_predictions

    if len(args.inputs) != 1:
        raise UserError("a table model predicts one table at a time: dlkit predict RUN TABLE.csv --out predictions.csv")
    read = predictor.explain_frame if args.explain else predictor.predict_frame  # explain: + the moving columns
    frame, notes = read(args.inputs[0], args.id_column, where=args.inputs[0])
    log = sys.stderr if args.json else sys.stdout
    for note in notes:
        print(f"note: {note}", file=log)
    if args.json:
        from .explaining import table_records

        print(table_records(frame) if args.explain else frame.to_json(orient="records"))
    if args.out:
        path = write_predictions(frame, Path(args.out), args.overwrite)
        print(f"wrote {len(frame)} prediction(s) to {path}", file=log)
    elif not args.json:
        print(frame.head(20).to_string(index=False))
        if len(frame) > 20:
            print(f"... {len(frame) - 20} more rows; --out predictions.csv writes them all")
    return 0
