"""Model summaries: a per-layer table (output shape, parameters, MACs) and the four questions every learner asks of
a network: how many parameters, how much compute, how much memory to train, how much to predict.

Compute is counted per layer from its shapes (convolutions and linear layers, the multiply-accumulates that matter);
`torch.utils.flop_counter.FlopCounterMode` checks it in the tests. Activation memory is measured, not guessed: the
tensors autograd saves for backward are recorded during a real forward pass at two batch sizes.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UserError
from ..track.summary_text import format_summary  # noqa: F401  (the summary's text, evaluation's public name)

# Optimizer state kept per trainable parameter, in parameter-sized tensors (momentum, squares, ...).
OPTIMIZER_STATE = {"sgd": 0, "sgd-momentum": 1, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


def _conv_macs(module: nn.modules.conv._ConvNd, out: torch.Tensor) -> int:
    per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
    return out[0].numel() * per_output


def _linear_macs(module: nn.Linear, out: torch.Tensor) -> int:
    return out[0].numel() * module.in_features


# Multiply-accumulates of one image through a layer, by layer type: the ops FlopCounterMode counts (matmul, conv).
MAC_RULES: dict[type, Callable[[nn.Module, torch.Tensor], int]] = {
    nn.modules.conv._ConvNd: _conv_macs,
    nn.Linear: _linear_macs,
}


@dataclass
class LayerCall:
    name: str
    kind: str
    output: tuple[int, ...]        # per image (batch dimension dropped)
    params: int                    # counted at a layer's first call only
    macs: int                      # per image
    weight_grad: bool              # backward computes a weight gradient
    input_grad: bool               # backward computes a gradient for the layer's input
    io_bytes: int                  # input + output bytes per image, the most a layer holds at once in inference


def _macs_of(module: nn.Module, out: torch.Tensor) -> int:
    own = getattr(module, "macs_per_image", None)  # a custom layer (the fast net's FlatConv) counts its own
    if own is not None:
        return own(out)
    for kind, rule in MAC_RULES.items():
        if isinstance(module, kind):
            return rule(module, out)
    return 0


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value[0].numel() * value.element_size() if value.dim() else value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def trace_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerCall]:
    """One forward of a single image with a hook on every leaf module, recording each call in order."""
    calls: list[LayerCall] = []
    seen: set[int] = set()

    def hook(module, inputs, output):
        first = id(module) not in seen
        seen.add(id(module))
        out = output[0] if isinstance(output, (tuple, list)) else output
        weight = getattr(module, "weight", None)
        calls.append(LayerCall(
            name=names[id(module)], kind=type(module).__name__,
            output=tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else (),
            params=sum(p.numel() for p in module.parameters(recurse=False)) if first else 0,
            macs=_macs_of(module, out) if isinstance(out, torch.Tensor) else 0,
            weight_grad=isinstance(weight, torch.Tensor) and weight.requires_grad,
            input_grad=bool(inputs) and isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad,
            io_bytes=_tensor_bytes(inputs[:1]) + _tensor_bytes(output)))

    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    names = {id(m): n for n, m in leaves}
    handles = [m.register_forward_hook(hook) for _, m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls


def activation_bytes(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[float, float]:
    """(bytes per image, fixed bytes) of the tensors autograd keeps for backward in a training forward, weights
    excluded: measured at batch sizes 2 and 4, the difference being what each image adds."""
    probe = copy.deepcopy(model).train()  # train mode (dropout masks, batch statistics) without touching the model
    own = {p.untyped_storage().data_ptr() for p in probe.parameters()}

    def saved_at(batch_size: int) -> int:
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor):
            storage = t.untyped_storage()
            if storage.data_ptr() not in own:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            probe(torch.rand(batch_size, *input_shape))
        return sum(saved.values())

    small, large = saved_at(2), saved_at(4)
    per_image = (large - small) / 2
    return per_image, max(0.0, small - 2 * per_image)


def default_optimizer() -> str:
    """The optimizer `dlkit train` uses when none is named (one source of truth: TrainConfig)."""
    from ..config import TrainConfig

    return TrainConfig.optimizer


def summarize(model: nn.Module | str, input_shape: tuple[int, ...] | None = None, batch_size: int = 32,
              optimizer: str | None = None, name: str | None = None, *, classes: int = 10,
              channels: int | None = None) -> dict[str, Any]:
    """Per-layer table and totals for `model` on CxHxW inputs (or F features for a table); memory at `batch_size`.

    `model` is a network, or a registered model's name: then it is built for `classes` classes at its own input
    size (lenet at 1x28x28, tv:* at 3x224x224, `dlkit models` lists each; channels 1 for the 28-pixel
    Fashion-MNIST models, else 3) unless `input_shape` says otherwise. Example: `dlkit.summarize("lenet-modern")`.

    Returns a dict (a ModelSummary: in a notebook, the layer table): layers, parameters, FLOPs (forward per image,
    training per image and per step), activation memory per image, and byte estimates to train (weights +
    gradients + optimizer state + activations + input) and to predict (optimizer None: training's default).
    Raises UserError for an unknown optimizer or a batch size below 1.
    """
    from ..track.results import ModelSummary

    if isinstance(model, str):
        name = name or model
        model, input_shape = _named_model(model, input_shape, classes, channels)
    elif input_shape is None:
        raise UserError("summarize(your_network) needs input_shape=(C, H, W) (or (F,) for a table model); "
                        "a registered name such as summarize('lenet-modern') brings its own")
    return ModelSummary(_summarize(model, tuple(input_shape), batch_size, optimizer, name))


def _named_model(name: str, input_shape, classes: int, channels: int | None) -> tuple[nn.Module, tuple[int, ...]]:
    """A registered model built at its own input size (or `input_shape`), for summarize(name)."""
    from ..models import create_model, default_size

    size = default_size(name)
    if input_shape is None and size == 0:
        raise UserError(f"{name} is a table model: pass input_shape=(F,), the number of input features")
    if input_shape is None:
        input_shape = (channels or (1 if size == 28 else 3), size, size)
    if len(input_shape) == 1:
        return create_model(name, in_features=input_shape[0], continuous=input_shape[0], num_outputs=classes), \
            tuple(input_shape)
    return create_model(name, in_channels=input_shape[0], num_classes=classes, image_size=input_shape[1]), \
        tuple(input_shape)


def _summarize(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, optimizer: str | None,
               name: str | None) -> dict[str, Any]:
    optimizer = optimizer or default_optimizer()
    if optimizer not in OPTIMIZER_STATE:
        raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZER_STATE)} (got {optimizer!r})")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size})")
    calls = trace_layers(model, input_shape)
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    macs = sum(c.macs for c in calls)
    # backward of a conv/linear costs one forward for the weight gradient and one for the input gradient, each
    # only where autograd needs it (the first layer has no input gradient; frozen layers no weight gradient)
    train_macs = sum(c.macs * (1 + c.weight_grad + c.input_grad) for c in calls)
    per_image, fixed = activation_bytes(model, input_shape)
    weight_bytes = sum(p.numel() * p.element_size() for p in params) + sum(b.numel() * b.element_size()
                                                                           for b in model.buffers())
    trainable_bytes = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    input_bytes = batch_size * math.prod(input_shape) * 4
    train = {"weights": weight_bytes, "gradients": trainable_bytes,
             "optimizer_state": OPTIMIZER_STATE[optimizer] * trainable_bytes,
             "activations": round(fixed + per_image * batch_size), "input": input_bytes}
    train["total"] = sum(train.values())
    peak_io = max((c.io_bytes for c in calls), default=0)
    predict = {"weights": weight_bytes, "activations": batch_size * peak_io, "input": input_bytes}
    predict["total"] = sum(predict.values())
    return {
        "model": name or type(model).__name__, "input": list(input_shape), "batch_size": batch_size,
        "optimizer": optimizer,
        "layers": [{"name": c.name, "type": c.kind, "output": list(c.output), "params": c.params, "macs": c.macs}
                   for c in calls],
        "params": total, "params_trainable": trainable, "params_frozen": total - trainable,
        "macs_per_image": macs, "flops_forward_per_image": 2 * macs, "flops_train_per_image": 2 * train_macs,
        "flops_train_step": 2 * train_macs * batch_size,
        "activation_bytes_per_image": round(per_image),
        "memory_train_bytes": train, "memory_predict_bytes": predict,
    }


def summarize_checkpoint(path: str | Path, batch_size: int = 32, optimizer: str | None = None,
                         trust_code: bool = False, model_code: str | None = None) -> dict[str, Any]:
    """summarize() for the model a run or checkpoint describes, at its own input size and with its own optimizer
    (trust_code / model_code as for dlkit.load)."""
    from ..infer.predictor import Predictor

    predictor = Predictor.from_checkpoint(path, "cpu", model_code, trust_code)
    config, spec = predictor.meta.get("config", {}), predictor.spec
    model = predictor.model
    if config.get("freeze_backbone"):
        model.freeze_backbone()
    chosen = optimizer or config.get("optimizer") or default_optimizer()
    if chosen == "sgd" and config.get("momentum"):
        chosen = "sgd-momentum"
    from ..data.modality import MODALITIES

    shape = MODALITIES.get(predictor.modality).input_shape(spec)
    return summarize(model, shape, batch_size, chosen, name=f"{predictor.meta['model']} ({predictor.path})")
