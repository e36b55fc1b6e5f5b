"""At the end of a run: PNG plots, validation metrics of the best checkpoint, its worst mistakes and report.html."""
from __future__ import annotations

import io
import json
from typing import Any

import torch

from ..storage import atomic_write_text, load_tensors
from ..track import figures

MISTAKES = 12


class RunArtifacts:
    def on_fit_start(self, trainer) -> None:
        figures.import_in_background()  # ready by the end of training, so the plots start at once
        # Captum is imported when the report asks for it, on this thread: imported on a second thread beside
        # matplotlib's, it left IPython half-initialised and the report's first figure failed

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        from ..evaluation.report import write_report

        run, task = trainer.run_dir, trainer.task
        logits, labels = self._best_logits(trainer)
        metrics = task.report_metrics(logits, labels)
        plots = run / "plots"
        figures.save(figures.curves_figure({run.name: trainer.history}, trainer.step_losses), plots / "curves.png")
        figures.save(figures.lr_figure(trainer.history), plots / "lr.png")
        if task.name == "classification":
            self._classification(trainer, metrics, logits, labels, plots)
        else:
            self._regression(trainer, metrics, plots)
        if not trainer.modality.has_images and not trainer.cfg.folds:  # a CV fold leaves it to the refit run
            self._importance(trainer, metrics, logits, labels, plots)
        atomic_write_text(run / "eval" / "val_metrics.json", json.dumps(metrics, indent=1))
        path = write_report(run, trainer.saved_config, trainer.history, summary, metrics, trainer.device_label,
                            spec_lines=trainer.data.spec.describe() if hasattr(trainer.data.spec, "describe") else None)
        trainer.console.print(f"report: {path}")

    def _classification(self, trainer, metrics, logits, labels, plots) -> None:
        from ..evaluation.metrics import most_confused

        names = trainer.data.spec.class_names
        metrics["most_confused"] = most_confused(metrics["confusion_matrix"], names)
        metrics["mistakes"] = self._mistakes(trainer, logits, labels)
        figures.save(figures.confusion_figure(metrics["confusion_matrix"], names,
                                              f"validation, best epoch {trainer.best_epoch}"), plots / "confusion.png")
        if trainer.modality.has_images:
            self._predictions_png(trainer, logits, labels, plots / "predictions.png")
            from .explained import add_explanations  # Grad-CAM over the mistakes and samples, when Captum is here

            add_explanations(trainer, metrics, labels, plots, _png_base64)

    def _regression(self, trainer, metrics, plots) -> None:
        predicted, actual = metrics.pop("predicted"), metrics.pop("actual")
        title = (f"validation, best epoch {trainer.best_epoch}: RMSE {figures.number(metrics['rmse'])}, "
                 f"R2 {figures.number(metrics['r2'])}")
        figures.save(figures.regression_figure(predicted, actual, title), plots / "regression.png")
        errors = torch.tensor(predicted, dtype=torch.float64) - torch.tensor(actual, dtype=torch.float64)
        worst = errors.abs().argsort(descending=True)[:MISTAKES].tolist()
        rows = trainer.data.val.index
        metrics["worst_rows"] = [{"row": int(rows[i]) + 2, "actual": actual[i], "predicted": predicted[i],
                                  "error": float(errors[i])} for i in worst]  # row: line in the file, header is 1

    def _importance(self, trainer, metrics, logits, labels, plots) -> None:
        from ..evaluation.importance import permutation_importance

        model, spec = trainer.eval_forward, trainer.data.spec

        @torch.inference_mode()
        def predict(rows: torch.Tensor) -> torch.Tensor:
            model.eval()
            return torch.cat([model(rows[s:s + 4096].to(trainer.device)).float().cpu() for s in range(0, len(rows), 4096)])

        importance = permutation_importance(predict, trainer.data.val.inputs, labels, trainer.task,
                                            spec.feature_groups(), seed=trainer.cfg.seed)
        metrics["permutation_importance"] = importance
        metric = "accuracy" if trainer.task.name == "classification" else "RMSE"
        figures.save(figures.importance_figure(importance, metric), plots / "importance.png")

    def _best_logits(self, trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation outputs of the best checkpoint, the one `dlkit eval` and `dlkit predict` use (it is left
        loaded in the model, so what follows describes the best checkpoint too)."""
        from ..infer.logits import predict_logits

        if trainer.best_epoch == trainer.epoch:
            return trainer.val_logits, trainer.val_labels
        weights, _ = load_tensors(trainer.run_dir / "checkpoints" / "best.safetensors")
        trainer.model.load_state_dict(weights)
        return predict_logits(trainer.eval_forward, trainer.whole_val_batches(), trainer.parts.inputs,
                              trainer.parts.autocast)  # rank 0 alone at the end of a DDP run: the whole split

    def _mistakes(self, trainer, logits, labels) -> list[dict[str, Any]]:
        from ..tasks import mean_of_members

        probs = mean_of_members(logits).softmax(1)
        wrong = (probs.argmax(1) != labels).nonzero().flatten()
        worst = wrong[probs[wrong].max(1).values.argsort(descending=True)][:MISTAKES].tolist()
        samples = trainer.data.val.subset(torch.tensor(worst, dtype=torch.int64))
        names = trainer.data.spec.class_names
        if not trainer.modality.has_images:  # a table: name the rows by their line in the file
            return [{"index": i, "row": int(samples.index[n]) + 2, "true": names[int(labels[i])],
                     "predicted": names[int(probs[i].argmax())], "probability": float(probs[i].max())}
                    for n, i in enumerate(worst)]
        images = trainer.images_of(samples) if worst else []
        return [{"index": i, "file": str(samples.paths[n]) if samples.paths else None,
                 "true": names[int(labels[i])], "predicted": names[int(probs[i].argmax())],
                 "probability": float(probs[i].max()), "png": _png_base64(images[n])} for n, i in enumerate(worst)]

    def _predictions_png(self, trainer, logits, labels, path) -> None:
        pick = torch.linspace(0, len(labels) - 1, min(16, len(labels))).long()
        images = trainer.images_of(trainer.data.val.subset(pick))
        names, predicted = trainer.data.spec.class_names, logits[pick].argmax(1)
        titles = [f"{names[p]} ({names[t]})" for p, t in zip(predicted.tolist(), labels[pick].tolist())]
        colors = ["green" if p == t else "red" for p, t in zip(predicted.tolist(), labels[pick].tolist())]
        figures.save(figures.image_grid(images, titles, colors=colors, caption=SAMPLES_CAPTION), path)


SAMPLES_CAPTION = "above each image: predicted (true) class; green where right, red where wrong"


def _png_base64(image: torch.Tensor) -> str:
    import base64

    from PIL import Image

    array = image.permute(1, 2, 0).squeeze(-1).numpy()
    buffer = io.BytesIO()
    picture = Image.fromarray(array)
    if max(picture.size) < 96:  # small digits are unreadable at native size
        scale = 96 // max(picture.size)
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
