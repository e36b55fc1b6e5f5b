"""Where the best checkpoint looked, for the report: Grad-CAM over the worst mistakes and the sample predictions.

Run at the end of an image classification run when Captum is installed and the model has a spatial layer; one
forward and backward over at most 28 images, and pictures blended without a figure each (a grid is one figure),
so the report costs little more. Without Captum, or for a model with no spatial map, the report says why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import UserError
from ..track import figures

SAMPLES = 16


def add_explanations(trainer, metrics: dict[str, Any], labels: torch.Tensor, plots: Path,
                     to_base64: Callable[[torch.Tensor], str]) -> None:
    """metrics["mistakes"][i]["looked_png"] (to_base64 of the blended picture) for each mistake,
    plots/predictions_explained.png for the samples, and metrics["explain_note"] naming the layer (or why not)."""
    from ..infer.explain import METHODS, captum_attr, explain_batch
    from ..infer.predictor import Predictor
    from ..track.overlay import blend

    try:
        captum_attr()
        model = getattr(trainer.model, "module", trainer.model)  # DDP keeps the network in .module
        predictor = Predictor(model, trainer.data.spec, {"model": str(trainer.cfg.model)}, trainer.device)
        layer = predictor.explain_layer()
    except UserError as e:
        metrics["explain_note"] = f"where it looked is not shown: {e}"
        return
    mistakes = metrics.get("mistakes") or []
    if mistakes:
        images = trainer.images_of(trainer.data.val.subset(torch.tensor([m["index"] for m in mistakes])))
        for m, e in zip(mistakes, explain_batch(predictor, images, layer=layer)):
            m["looked_png"] = to_base64(blend(e.image, e.map))
    _samples_png(trainer, predictor, layer, labels, plots / "predictions_explained.png")
    model.eval()
    metrics["explain_note"] = (f"{METHODS['gradcam']} at layer {layer}: red where the network looked most for the "
                               "class it predicted")


def _samples_png(trainer, predictor, layer: str, labels, path: Path) -> None:
    """The same samples as plots/predictions.png, each blended with its map, titled predicted (true)."""
    from ..infer.explain import explain_batch
    from ..track.overlay import blend

    pick = torch.linspace(0, len(labels) - 1, min(SAMPLES, len(labels))).long()
    images = trainer.images_of(trainer.data.val.subset(pick))
    explained = explain_batch(predictor, images, layer=layer)
    names, truth = trainer.data.spec.class_names, labels[pick].tolist()
    titles = [f"{e.class_name} ({names[t]})" for e, t in zip(explained, truth)]
    colors = ["green" if e.target == t else "red" for e, t in zip(explained, truth)]
    grid = torch.stack([blend(e.image, e.map) for e in explained])
    figures.save(figures.image_grid(grid, titles, colors=colors,
                                    caption=f"predicted (true); red: where it looked most (Grad-CAM at {layer})"), path)
