"""Predictor: a model rebuilt from a checkpoint's metadata, preprocessing exactly as its saved spec says."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable

import torch

from ..data.images import load_image
from ..data.spec import PreprocessSpec
from ..data.transforms import fit_to_spec, normalize
from ..errors import UserError
from ..models import create_model
from .tta import check_mode, with_tta
from ..trust import CodeTrust
from ..storage import load_tensors
from ..device import resolve_device


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its best checkpoint (or last); a file is taken as it is."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise UserError(f"{path} holds no checkpoints/best.safetensors; pass a run folder made by `dlkit train`")
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run folder or a checkpoint .safetensors file")
    return path


def cv_checkpoints(path: Path) -> list[Path]:
    """For a `dlkit cv` folder: its refit model when there is one, else the best checkpoint of every fold."""
    import json

    if not (path.is_dir() and (path / "cv.json").is_file()):
        return []
    if (path / "refit" / "checkpoints").is_dir():
        return [resolve_checkpoint(path / "refit")]
    try:  # cv.json is data: each fold's folder is looked for by its name alone, inside this folder
        names = [Path(f["run_dir"]).name for f in json.loads((path / "cv.json").read_text())["folds"]]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise UserError(f"{path / 'cv.json'} is not a cv.json dlkit wrote ({type(e).__name__}); pass one fold's run "
                        "folder instead") from None
    if not names:
        raise UserError(f"{path / 'cv.json'} lists no folds; pass one fold's run folder instead")
    return [resolve_checkpoint(path / name) for name in names]


def _rebuild(file: Path, trust: CodeTrust) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model a checkpoint describes. Its metadata is data: the code it names is imported only if trusted."""
    from ..trust import code_in_checkpoint, require_trust
    from ..models.user import load_models_from

    tensors, meta = load_tensors(file)
    require_trust(code_in_checkpoint(meta, trust.model_code), file, trust)
    with damaged_metadata(file):
        _require_spec_args(meta)
    if "model_source" in meta:  # the learner's own network: import its code again
        return _rebuild_user_model(file, tensors, meta, trust.model_code), meta
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    load_models_from(config.get("models_from"))  # trusted above; installed plugins' names too
    with damaged_metadata(file):
        name, args = meta["model"], meta["model_args"]
        if not isinstance(name, str) or not isinstance(args, dict):
            raise TypeError("model is not a name, or model_args not a mapping")
    _require_fit(file, name, args, tensors)
    model = create_model(name, **args)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"checkpoint {file}: its weights do not fit {name} ({str(e).splitlines()[0][:150]})") from None
    return model, meta


def _require_spec_args(meta: dict[str, Any]) -> None:
    """An image model's size and classes are its spec's (training derives one from the other): a checkpoint asking
    for another is refused, so the spec's bounds (data/spec.py) bound the model's trial forward too."""
    if meta.get("modality", "image") != "image":
        return
    spec, args = PreprocessSpec.from_dict(meta["spec"]), meta["model_args"]
    if (int(args["image_size"]), int(args["num_classes"]), int(args["in_channels"])) != \
            (spec.image_size, spec.num_classes, spec.channels):
        raise ValueError("model_args' image_size, num_classes or in_channels differ from the spec's")


def _require_fit(file: Path, name: str, args: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Build the model on the meta device first (shapes, no memory) and compare every tensor with the file's: model
    arguments no training wrote (hidden=[60000, 60000] asks for 14 GB) are refused before anything is allocated."""
    with torch.device("meta"):
        probe = create_model(name, **args)
    wanted = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    differ = [k for k, shape in wanted.items() if k not in tensors or tuple(tensors[k].shape) != shape]
    differ += sorted(set(tensors) - set(wanted))
    if differ:
        raise UserError(f"checkpoint {file}: its weights do not fit the {name} its arguments describe ({differ[0]}"
                        f"{f' and {len(differ) - 1} more' if len(differ) > 1 else ''}); the file is damaged or was "
                        "not written by dlkit train")


@contextlib.contextmanager
def damaged_metadata(file: Path):
    """A checkpoint's metadata read as data: a missing or mistyped field is the file's fault, said in one line."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as e:
        raise UserError(f"checkpoint {file} does not describe a model dlkit can rebuild ({type(e).__name__}: "
                        f"{str(e)[:120]}); was it written by dlkit train?") from None


def _rebuild_user_model(file: Path, tensors, meta: dict[str, Any], code: str | None) -> torch.nn.Module:
    import sys

    from ..models.user import DATA_ARGS, create_user_model

    with damaged_metadata(file):
        args = dict(meta["model_args"])
        data_args = {k: int(args.pop(k)) for k in DATA_ARGS}
    model, _, notes = create_user_model(meta["model"], **data_args, options=args, code=code,
                                        source=meta["model_source"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        changed = " (its code changed since training)" if notes else ""
        raise UserError(f"the weights in {file} do not fit {meta['model_source']['name']}{changed}: "
                        f"{str(e).splitlines()[0][:150]}; pass the code it was trained with, --model-code FILE") from None
    for note in notes:
        print(f"warning: {note}; they do", file=sys.stderr)
    return model


def run_dir_of(checkpoint: Path) -> Path | None:
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" and (parent.parent / "config.yaml").is_file() else None


class Predictor:
    """Class probabilities for images, from a checkpoint alone."""

    def __init__(self, model: torch.nn.Module, spec: PreprocessSpec, meta: dict[str, Any], device: torch.device,
                 path: Path | None = None, tta: str | None = None):
        self.model, self.spec, self.meta, self.device, self.path = model.eval(), spec, meta, device, path
        self.tta = check_mode(tta if tta is not None else (meta.get("config") or {}).get("tta"))
        self.forward = with_tta(self.model, self.tta)  # what predictions use; self.model stays the bare network

    modality = "image"

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", model_code: str | None = None,
                        trust_code: bool = False, tta: str | None = None):
        """A Predictor for an image model, a TablePredictor for a table model (all folds of a CV folder).
        trust_code: import the learner's own network (and models_from files) that the checkpoint names.
        model_code: the file defining the learner's own network, which you trust (where it is now).
        tta: test-time augmentation, default the run's own (`--tta` at training); "none" turns it off."""
        dev = resolve_device(device)
        files = cv_checkpoints(Path(path)) or [resolve_checkpoint(path)]
        trust = CodeTrust.of(trust_code, model_code)
        models, metas = zip(*(_rebuild(file, trust) for file in files))
        meta = metas[0]
        with damaged_metadata(files[0]):
            if meta.get("modality") == "table":
                from .tabular import load_table_predictor

                if tta not in (None, "none"):
                    raise UserError(f"--tta {tta} is for image models; {path} is a table model (leave --tta out)")
                return load_table_predictor(metas, [m.to(dev) for m in models], dev, files[0])
            if len(files) > 1:
                raise UserError(f"{path} is a CV folder of image models; pass one fold's run folder, or the refit run")
            spec = PreprocessSpec.from_dict(meta["spec"])
            if spec.num_classes != int(meta["model_args"]["num_classes"]):
                raise ValueError(f"{spec.num_classes} class names for a model of {meta['model_args']['num_classes']}")
            return cls(models[0].to(dev), spec, meta, dev, files[0], tta)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.class_names

    def __repr__(self) -> str:
        names = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
        s = self.spec
        tta = f", tta {self.tta}" if self.tta != "none" else ""
        return (f"Predictor({self.meta.get('model')}, {len(self.classes)} classes ({names}), "
                f"{s.channels}x{s.image_size}x{s.image_size} images{tta}, on {self.device}, from {self.path})")

    def _repr_html_(self) -> str:
        from ..track.notebook import predictor_html

        return predictor_html(self)

    def to_uint8(self, item) -> torch.Tensor:
        """One image (path, PIL image or CxHxW tensor) -> uint8 tensor at the spec's size and channels."""
        if isinstance(item, torch.Tensor):
            image = item if item.dtype == torch.uint8 else (item.float().clamp(0, 1) * 255).round().to(torch.uint8)
            if image.ndim != 3:
                raise UserError(f"expected an image tensor of shape CxHxW, got {tuple(item.shape)}")
            return fit_to_spec(image.unsqueeze(0), self.spec)[0]
        return load_image(item, self.spec.channels, self.spec.image_size)

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NxCxHxW (already at the spec's size) -> NxK probabilities."""
        x = normalize(images.to(self.device), self.spec)
        return self.forward(x).float().softmax(1).cpu()

    def predict(self, item, topk: int = 5):
        """Top-k [(class name, probability), ...] for one image, or a list of those for a list of images.
        (In a notebook they show as thumbnails with a bar per class: track/results.py.)"""
        from ..track.results import predictions, top_k

        if isinstance(item, (list, tuple)):
            return predictions([self._topk(p, topk) for p in self.predict_proba(item)], item, self)
        return top_k(self._topk(self.predict_proba([item])[0], topk), item, self)

    def predict_proba(self, items: Iterable, batch_size: int = 64) -> torch.Tensor:
        items = list(items)
        out = [self.probabilities(torch.stack([self.to_uint8(i) for i in items[s:s + batch_size]]))
               for s in range(0, len(items), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def export_onnx(self, *args, **options):
        """Moved to dlkit.export_onnx(predictor, path, ...): the predictor no longer imports export (the layers
        contract), so this only says where it went."""
        raise UserError("predictor.export_onnx(...) moved: call dlkit.export_onnx(predictor, path, ...), or "
                        "`dlkit export RUN` from the shell")

    def _topk(self, probs: torch.Tensor, k: int) -> list[tuple[str, float]]:
        values, index = probs.topk(min(k, len(probs)))
        return [(self.classes[i], float(v)) for v, i in zip(values.tolist(), index.tolist())]

    def explain(self, item, target: int | str | None = None, layer: str | None = None, method: str = "gradcam"):
        """Where the network looked: an Explanation (`.map`, HxW in 0..1; `.save('x.png')` writes the overlay; a
        notebook shows it) for one image, a list for a list. target: a class name or index (default: the predicted
        class); layer: a module name (default: the last with a spatial map larger than 1x1); method: gradcam or
        guided-gradcam. Needs Captum (dlkit[explain]). See infer/explain.py."""
        from .explain import explain_batch

        items = list(item) if isinstance(item, (list, tuple)) else [item]
        targets = target if isinstance(target, (list, tuple)) else [target] * len(items)
        found = explain_batch(self, torch.stack([self.to_uint8(i) for i in items]), targets, layer, method, items)
        return found if isinstance(item, (list, tuple)) else found[0]

    def explain_layer(self, name: str | None = None) -> str:
        """The layer Grad-CAM reads: `name` checked against the model, or the one found automatically (cached)."""
        from .explain import target_layer

        checked = self.__dict__.setdefault("_explain_layers", {})  # name (None: automatic) -> layer, one trial each
        if name not in checked:
            s = self.spec
            checked[name] = target_layer(self.model, (s.channels, s.image_size, s.image_size), self.device, name,
                                         str(self.meta.get("model", "the model")))
        return checked[name]



def load(path: str | Path, device: str = "auto", model_code: str | None = None, trust_code: bool = False,
         tta: str | None = None) -> Predictor:
    """Load a run folder or checkpoint file for prediction. Example: `dlkit.load("runs/x").predict("cat.jpg")`.

    A checkpoint is data: registered and torchvision models load from it alone. One whose model is a network you
    wrote names code, which is imported only with trust_code=True (from the file recorded at training), or from
    `model_code`, the file you trust (where it is now)."""
    return Predictor.from_checkpoint(path, device, model_code, trust_code, tta)


def expand_inputs(paths: Iterable[str | Path], notes: list[str] | None = None) -> list[Path]:
    """Files as given; folders expanded to the images below them (sorted) by training's rule (data/folders.py: the
    same extensions, hidden entries skipped). What the folders held besides is named in a warning added to notes:
    a folder's other files were skipped without a word."""
    from ..data.folders import FileList, ignored_notes, images_below

    files: list[Path] = []
    found = FileList()
    for p in map(Path, paths):
        if p.is_dir():
            start = len(found.files)
            images_below(p, found, "")
            files += found.files[start:]
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"{p} does not exist; pass image files or folders of images")
    left = ignored_notes([found])
    if not files:
        raise UserError(f"no image files to predict on{''.join(f' ({n})' for n in left)}; pass image files or folders "
                        "holding .jpg/.png images")
    if notes is not None:
        notes += left
    return files
