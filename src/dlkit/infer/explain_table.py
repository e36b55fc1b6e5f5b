"""Which columns moved a table model's prediction, per row: Captum's IntegratedGradients on the model's own inputs.

The model sees the rows as TableSpec.transform makes them (scaled numbers, 0/1 flags, one-hot blocks, category
codes); attributions are computed there and summed back to the user's columns with `TableSpec.feature_groups`, so a
category's whole one-hot block (and a number's missing-value flag) counts as that one column.

The reference row is the zero input: every number at its training median (mean under standard scaling), every flag
and one-hot off. Integrated gradients add up to the prediction minus the reference row's prediction (Sundararajan
et al. 2017), so an effect reads in the prediction's own units: the predicted class's log-odds, or the target's
units for numbers. Category codes fed to embeddings are whole numbers, which gradients cannot move along; each of
those columns gets the change from setting it to the unknown bucket (Captum's FeatureAblation) instead.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..tasks import mean_of_members
from .explain import captum_attr


class _Score(torch.nn.Module):
    """What is explained: the log-odds of the row's predicted class, or the prediction in the target's own units."""

    def __init__(self, model: torch.nn.Module, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = mean_of_members(self.model(x))
        if self.task.name == "classification":
            return log_odds(out)
        return self.task.scale.decode(out[:, 0]).float()


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """Per class, log(p / (1 - p)) from the logits. Unlike the probability it does not saturate: a row predicted
    at 0.9999 against a reference at 0.99 still shows what moved it (a probability effect would be ~0)."""
    k = logits.shape[1]
    others = logits.unsqueeze(1).expand(-1, k, -1).masked_fill(torch.eye(k, dtype=torch.bool, device=logits.device),
                                                                float("-inf"))
    return logits - others.logsumexp(2)


def column_effects(predictor: Any, frame, where: str = "the table", steps: int = 32):
    """A DataFrame (a row per input row, a column per model input column): how much each column moved the
    prediction from the reference row's. Fold models of a CV folder are averaged. Rows the model cannot read are
    refused as predict refuses them, before any work."""
    import pandas as pd

    predicted = predictor.predicted(frame, where)
    target = None
    if predictor.spec.task == "classification":
        target = torch.tensor([predictor.classes.index(c) for c in predicted["prediction"]])
    total = None
    for model, spec in zip(predictor.models, predictor.specs):
        effects = _model_effects(model, spec, spec.transform(frame, where).to(predictor.device), target, steps)
        total = effects if total is None else total + effects
    names = [name for name, _ in predictor.spec.feature_groups()]
    return pd.DataFrame((total / len(predictor.models)).numpy(), columns=names, index=frame.index)


def _model_effects(model, spec, rows: torch.Tensor, target: torch.Tensor | None, steps: int) -> torch.Tensor:
    attr = captum_attr()
    score = _Score(model.eval(), spec.make_task())
    target = target.to(rows.device) if target is not None else None
    numbers = spec.numeric_width
    baseline = rows.clone()
    baseline[:, :numbers] = 0  # codes (after the numbers) stay as they are: gradients cannot move them
    with torch.enable_grad():
        per_input = attr.IntegratedGradients(score).attribute(rows, baselines=baseline, target=target,
                                                              n_steps=steps, internal_batch_size=4096)
    per_input = per_input.detach().float()
    if rows.shape[1] > numbers:
        mask = torch.zeros(1, rows.shape[1], dtype=torch.long, device=rows.device)
        mask[0, numbers:] = torch.arange(1, rows.shape[1] - numbers + 1)
        with torch.no_grad():
            ablated = attr.FeatureAblation(score).attribute(rows, baselines=0.0, target=target, feature_mask=mask)
        per_input[:, numbers:] = ablated[:, numbers:].float()
    groups = spec.feature_groups()
    return torch.stack([per_input[:, index].sum(1) for _, index in groups], dim=1).cpu()


def strongest(effects, k: int = 3) -> list[list[tuple[str, float]]]:
    """Per row, the k columns with the largest effect (either sign), largest first: [(column, effect), ...]."""
    k = min(k, effects.shape[1])
    values = effects.to_numpy()
    order = (-abs(values)).argsort(axis=1)[:, :k]
    names = list(effects.columns)
    return [[(str(names[j]), float(values[i, j])) for j in row] for i, row in enumerate(order)]


def describe(pairs: Sequence[tuple[str, float]]) -> str:
    """'bill_length_mm +0.31, island -0.12': the columns and their signed effects, as one cell."""
    return ", ".join(f"{name} {effect:+.3g}" for name, effect in pairs)


def effect_note(predictor: Any) -> str:
    what = ("the log-odds of the predicted class" if predictor.spec.task == "classification"
            else f"the predicted {predictor.spec.target}")
    return (f"explanation: the columns that moved {what} most, with how much (+ raised it), against a reference row "
            "with every number at its training median and every flag and category off (integrated gradients)")
