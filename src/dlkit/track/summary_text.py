"""How a model summary reads on the console: the per-layer table and the four answers (size, compute, memory to
train, memory to predict). evaluation/summary.py computes the numbers; the notebook shows the same words."""
from __future__ import annotations

from typing import Any


def format_summary(s: dict[str, Any]) -> str:
    """The per-layer table and the four answers, as text for the console."""
    rows = [(layer["name"] or "(model)", layer["type"], "x".join(map(str, layer["output"])) or "-",
             f"{layer['params']:,}", _si(layer["macs"])) for layer in s["layers"]]
    header = ("layer", "type", "output", "params", "MACs")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    train, predict, b = s["memory_train_bytes"], s["memory_predict_bytes"], s["batch_size"]
    input_text = "x".join(map(str, s["input"]))
    unit = "row" if len(s["input"]) == 1 else "image"  # a table model's sample is a row of F features, not an image
    title = f"{s['model']} on " + (f"rows of {input_text} features" if unit == "row" else f"{input_text} inputs")
    return "\n".join([
        title, line(header), "  ".join("-" * w for w in widths), *map(line, rows), "",
        f"parameters:  {s['params']:,} ({s['params_trainable']:,} trainable, {s['params_frozen']:,} frozen), "
        f"{_bytes(train['weights'])} with buffers",
        f"compute:     {_si(s['macs_per_image'])}MACs = {_si(s['flops_forward_per_image'])}FLOPs per {unit} forward; "
        f"{_si(s['flops_train_per_image'])}FLOPs per {unit} to train; {_si(s['flops_train_step'])}FLOPs per training "
        f"step at batch {b}",
        f"train:       {_bytes(train['total'])} at batch {b} with {s['optimizer']} = weights {_bytes(train['weights'])}"
        f" + gradients {_bytes(train['gradients'])} + optimizer {_bytes(train['optimizer_state'])} + activations "
        f"{_bytes(train['activations'])} ({_bytes(s['activation_bytes_per_image'])} per {unit}) + input "
        f"{_bytes(train['input'])}",
        f"predict:     {_bytes(predict['total'])} at batch {b} = weights {_bytes(predict['weights'])} + largest "
        f"layer in+out {_bytes(predict['activations'])} + input {_bytes(predict['input'])}",
    ])


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} "


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"
