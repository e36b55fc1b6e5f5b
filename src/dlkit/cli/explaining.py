"""`dlkit predict ... --explain`: an overlay PNG per image (Grad-CAM), or the columns that moved each table row."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError


def add_explain_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--explain", action="store_true", help="images: also write where the network looked, an overlay "
                   "PNG per image (Grad-CAM); tables: add the columns that moved each row's prediction most, signed "
                   "(integrated gradients). Needs Captum: pip install 'dlkit[explain]'")
    p.add_argument("--explain-out", metavar="DIR", help="images: the folder for the overlays (default: the run's "
                   "explain/ folder); an existing overlay is kept unless --overwrite")
    p.add_argument("--explain-layer", metavar="NAME", help="images: the layer Grad-CAM reads (default: the last with "
                   "a spatial map larger than 1x1); a wrong name lists the candidates")
    p.add_argument("--explain-method", default="gradcam", choices=("gradcam", "guided-gradcam"),
                   help="images: Grad-CAM, or Guided Grad-CAM (Grad-CAM times guided backpropagation: pixel-sharp)")


class ImageExplainer:
    """Predicts each image from the same forward pass that explains it, and writes its overlay. Everything that
    can be refused (Captum missing, the layer, an existing overlay) is refused before the first image."""

    def __init__(self, predictor, args: argparse.Namespace, paths: list[Path]):
        from ..infer.explain import captum_attr
        from ..infer.predictor import run_dir_of

        captum_attr()
        self.predictor, self.method = predictor, args.explain_method
        self.layer = predictor.explain_layer(args.explain_layer)
        home = run_dir_of(predictor.path) if predictor.path else None
        folder = Path(args.explain_out) if args.explain_out else (home or Path(predictor.path or ".").parent) / "explain"
        self.targets = overlay_names(paths, folder)
        existing = [str(t) for t in self.targets.values() if t.exists()]
        if existing and not args.overwrite:
            raise UserError(f"{existing[0]} already exists ({len(existing)} overlay(s) would be replaced); choose "
                            "another --explain-out or pass --overwrite")
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--explain-out {folder} is a file; give a folder for the overlays")
        self.written: dict[Path, Path] = {}

    def predict(self, path: Path, topk: int) -> list[tuple[str, float]]:
        explanation = self.predictor.explain(path, layer=self.layer, method=self.method)
        self.written[path] = explanation.save(self.targets[path])
        return explanation.topk(topk)


def overlay_names(paths: list[Path], folder: Path) -> dict[Path, Path]:
    """One PNG per image in `folder`, named after it (photo.jpg -> photo.png); same names get -2, -3, ..."""
    names: dict[Path, Path] = {}
    taken: set[str] = set()
    for path in paths:
        stem, n = path.stem, 1
        while (name := f"{stem}{'' if n == 1 else f'-{n}'}.png") in taken:
            n += 1
        taken.add(name)
        names[path] = folder / name
    return names


def table_records(frame) -> str:
    """--json for an explained table: the rows, each with `explanation` as [{"column", "effect"}, ...]."""
    rows = json.loads(frame.drop(columns="explanation").to_json(orient="records"))
    for row, pairs in zip(rows, frame.attrs["strongest"]):
        row["explanation"] = [{"column": c, "effect": e} for c, e in pairs]
    return json.dumps(rows)
