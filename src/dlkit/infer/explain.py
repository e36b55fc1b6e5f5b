"""Where an image model looked: Grad-CAM maps (Captum's LayerGradCam) and the overlay picture, for any image model.

Captum, the PyTorch organisation's attribution library, does the attribution itself (hooks, gradients, the
weighting of the activations); this module only picks the layer, calls it and shapes the result. It is imported
lazily (`pip install 'dlkit[explain]'`), so `import dlkit` stays light.

The layer is found by one trial forward with a hook on every module: the last one, in the order the forward ran
them, whose output is a spatial map (NxCxHxW) larger than 1x1. That works for registered models, `tv:` models and
the learner's own networks alike, whatever their modules are called.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..data.transforms import normalize
from ..errors import UserError

METHODS = {"gradcam": "Grad-CAM", "guided-gradcam": "Guided Grad-CAM"}
INSTALL = "pip install 'dlkit[explain]' (Captum)"


def captum_attr():
    try:
        import captum.attr
    except ImportError:
        raise UserError(f"explaining predictions needs Captum: {INSTALL}") from None
    return captum.attr


def spatial_layers(model: nn.Module, shape: Sequence[int], device: torch.device) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every module whose output is a 4-d map, in the order a trial forward finished them
    (a module run twice counts at its last run)."""
    seen: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in model.named_modules():
        if name:
            def record(_module, _inputs, output, name=name):
                if isinstance(output, torch.Tensor) and output.dim() == 4:
                    seen.pop(name, None)
                    seen[name] = tuple(output.shape)
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return list(seen.items())


def target_layer(model: nn.Module, shape: Sequence[int], device: torch.device, name: str | None = None,
                 model_name: str = "the model") -> str:
    """The layer to explain: `name` when given (checked), else the last with a spatial map larger than 1x1."""
    layers = spatial_layers(model, shape, device)
    maps = [n for n, s in layers if s[2] * s[3] > 1]
    if name is None:
        if not maps:
            raise UserError(f"{model_name} has no layer with a spatial map larger than 1x1 "
                            f"({_why_flat(layers)}), so there is no 'where' to show; a convolutional model "
                            "(quick, resnet18, tv:...) can be explained")
        return maps[-1]
    if name in maps:
        return name
    names = dict(model.named_modules())
    listed = ", ".join(maps[-12:]) + (f" (and {len(maps) - 12} earlier)" if len(maps) > 12 else "")
    if name in names:
        shape_of = dict(layers).get(name)
        what = f"a {'x'.join(map(str, shape_of[2:]))} map" if shape_of else "no spatial map"
        raise UserError(f"--explain-layer {name!r} gives {what}; choose a layer with a map larger than 1x1: "
                        f"{listed or 'none in this model'}")
    raise UserError(f"--explain-layer {name!r} is not a layer of {model_name}; layers with a spatial map: "
                    f"{listed or 'none'}")


def _why_flat(layers) -> str:
    if not layers:
        return "it sees the image as one flat vector"
    return f"its last map, {layers[-1][0]}, is already 1x1"


@contextlib.contextmanager
def _no_inplace(model: nn.Module):
    """In-place activations (ReLU(inplace=True)) would overwrite the layer output Captum keeps; turned off for the
    call (the numbers are the same), and restored."""
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


class _ClassScore(nn.Module):
    """What Captum differentiates: the score (logit) of the class chosen for each image; the logits are kept, so
    one forward and one backward give both the map and the probabilities. A module, not a function, because
    Guided Grad-CAM finds the ReLUs to modify among its submodules."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.outputs = model, []

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        self.outputs.append(logits.detach())
        chosen = torch.where(target >= 0, target, logits.detach().argmax(1))
        return logits.gather(1, chosen[:, None])[:, 0]


def attribute(model: nn.Module, x: torch.Tensor, layer: str, targets: torch.Tensor,
              method: str = "gradcam") -> tuple[torch.Tensor, torch.Tensor]:
    """(maps NxHxW in [0,1] at the input's size, logits NxK) for a normalised batch. targets: a class index per
    image, or -1 for the predicted class."""
    attr = captum_attr()
    module = model.get_submodule(layer)
    forward = _ClassScore(model)
    with _no_inplace(model), torch.enable_grad():
        if method == "gradcam":
            cam = attr.LayerGradCam(forward, module).attribute(x, additional_forward_args=(targets,),
                                                                relu_attributions=True)
            maps = attr.LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
        elif method == "guided-gradcam":
            with warnings.catch_warnings():  # Captum says it hooks the ReLUs, each call; it removes them after
                warnings.simplefilter("ignore", UserWarning)
                maps = attr.GuidedGradCam(forward, module).attribute(x, additional_forward_args=(targets,))
            maps = maps.detach().abs().sum(1, keepdim=True)
        else:
            raise UserError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    maps = maps[:, 0].float().clamp(min=0)
    peak = maps.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
    return (maps / peak).cpu(), forward.outputs[0].float().cpu()


@dataclass
class Explanation:
    """Where the network looked for one image: `map` (HxW, 0..1, 1 = most), the input `image` (uint8 CxHxW at the
    model's size), the class explained and its probability. In a notebook it shows the overlay; `.save(path)`
    writes it as a PNG, `.png()` gives its bytes."""

    image: torch.Tensor
    map: torch.Tensor
    target: int
    class_name: str
    probability: float
    layer: str
    method: str = "gradcam"
    source: str | None = None
    probabilities: torch.Tensor | None = None   # every class's, from the same forward as the map
    classes: Sequence[str] = ()

    def topk(self, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely [(class, probability), ...], as Predictor.predict gives them."""
        values, index = self.probabilities.topk(min(k, len(self.probabilities)))
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), index.tolist())]

    @property
    def title(self) -> str:
        return f"{self.class_name} {self.probability:.3f}"

    def picture(self):
        """The overlay as a PIL image: the photo | the photo with the map over it, the class and probability above,
        the method and layer below."""
        from ..track.overlay import overlay_image

        where = f"{Path(self.source).name}: " if self.source else ""
        return overlay_image(self.image, self.map, where + self.title, f"{METHODS[self.method]} at {self.layer}")

    def png(self) -> bytes:
        import io

        buffer = io.BytesIO()  # zlib level 1: a third of level 6's time, for a slightly bigger file
        self.picture().save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        from ..storage import atomic_write_bytes

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.png())
        return path

    def _repr_png_(self) -> bytes:
        if getattr(self, "_shown", None) is None:  # a notebook asks for both reprs: draw once
            self._shown = self.png()
        return self._shown

    def _repr_html_(self) -> str:
        from ..track.html import esc, img

        return f"<figure style='display:inline-block;margin:0'>{img(self._repr_png_(), alt=esc(self.title))}</figure>"

    def __repr__(self) -> str:
        return (f"Explanation({self.class_name!r} {self.probability:.3f}, {METHODS[self.method]} at {self.layer}, "
                f"map {tuple(self.map.shape)}; in a notebook it shows the overlay, .save('x.png') writes it)")


class Explanations(list):
    """Several images' Explanations, a list; a notebook shows their overlays side by side."""

    def _repr_html_(self) -> str:
        return "<div>" + "".join(e._repr_html_() for e in self) + "</div>"


def explain_batch(predictor: Any, images: torch.Tensor, targets: Sequence[int | str | None] | None = None,
                  layer: str | None = None, method: str = "gradcam",
                  sources: Sequence[Any] | None = None) -> Explanations:
    """Explanations for uint8 NxCxHxW images at the predictor's size (one forward and backward for the batch)."""
    if method not in METHODS:
        raise UserError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    captum_attr()
    spec = predictor.spec
    name = predictor.explain_layer(layer)
    wanted = torch.tensor([_class_index(t, predictor.classes) for t in (targets or [None] * len(images))])
    x = normalize(images.to(predictor.device), spec)
    maps, logits = attribute(predictor.model, x, name, wanted.to(predictor.device), method)
    probs = logits.softmax(1)
    chosen = torch.where(wanted >= 0, wanted, probs.argmax(1))
    result = []
    for i, c in enumerate(chosen.tolist()):
        source = str(sources[i]) if sources is not None and isinstance(sources[i], (str, Path)) else None
        result.append(Explanation(images[i].cpu(), maps[i], c, predictor.classes[c], float(probs[i, c]), name,
                                  method, source, probs[i], tuple(predictor.classes)))
    return Explanations(result)


def _class_index(target: int | str | None, classes: Sequence[str]) -> int:
    """A class given by index or name; None: the predicted class (-1)."""
    if target is None:
        return -1
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(classes):
        return target
    shown = ", ".join(map(str, classes[:10])) + (" ..." if len(classes) > 10 else "")
    raise UserError(f"target {target!r} is not a class of this model; give a class name or index: {shown}")
