"""The learner's own networks: `--model net.py:Tudui`, `--model package.module:make_net`, `dlkit.train(model=Tudui())`
and `@dlkit.register_model("tudui")`.

Naming a file runs its code, as `python net.py` would. A class or factory is called with the --model-arg options,
plus in_channels / num_classes / image_size where its signature takes them. The checkpoint records where the code
came from (file or module, name, arguments, the file's SHA-256), so `dlkit predict` can import it again.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UserError
from ..trust import is_user_spec, network_source  # noqa: F401  (is_user_spec: models' public name for it)
from .base import Classifier, find_last_layer

DATA_ARGS = ("in_channels", "num_classes", "image_size")


class UserCodeError(UserError):
    """An exception raised inside the user's own model code: their bug to see, so its traceback is kept, trimmed to
    the frames of their files."""

    def __init__(self, message: str, error: BaseException, files: set[str]):
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename in files] or \
            traceback.extract_tb(error.__traceback__)[-1:]
        self.details = "".join(traceback.format_list(frames)) + f"{type(error).__name__}: {error}"
        super().__init__(message)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_module_file(path: str | Path):
    """Run a .py file as a module (its code runs, as `python file.py` would), once per process, path and content."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass --model path/to/net.py:ClassName")
    name = module_name_of_file(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))  # so the file can import its neighbours, as it would when run directly
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise UserCodeError(f"{path.name} raised {type(e).__name__} while it was imported: {e}", e, {str(path)}) from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def module_name_of_file(path: Path) -> str:
    """The module name a .py file runs as: one per path and content, so an edited file is imported anew."""
    return f"dlkit_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}_{file_sha256(path)[:12]}"


def resolve(spec: str, code: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(the class, factory or module object named by `spec`, where it came from). `code` points a moved file elsewhere."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise UserError(f"--model {spec!r}: expected path/to/net.py:ClassName or package.module:name")
    if code or where.endswith(".py") or Path(where).is_file():
        file = Path(code or where).expanduser().resolve()
        module = load_module_file(file)
        source = {"file": str(file), "name": attr, "sha256": file_sha256(file)}
    else:
        if where.split(".")[0] in sys.stdlib_module_names:  # refused before importing it (antigravity opens a browser)
            raise UserError(f"--model {spec!r}: {where} is a standard-library module, which holds no network; "
                            "name a class or factory in your own file or package")
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise UserError(f"--model {spec!r}: cannot import {where} ({e}); is it installed or on PYTHONPATH?") from None
        file = getattr(module, "__file__", None)
        source = {"module": where, "name": attr, **({"file": file, "sha256": file_sha256(file)} if file else {})}
    if not hasattr(module, attr):
        found = [n for n, v in vars(module).items() if not n.startswith("_") and (
            (inspect.isclass(v) and issubclass(v, nn.Module)) or (inspect.isfunction(v) and v.__module__ == module.__name__))]
        raise UserError(f"{where} has no {attr!r}; it defines {', '.join(found) or 'no nn.Module class or function'}")
    return getattr(module, attr), source


def source_of(obj: Any) -> dict[str, Any]:
    """Where a class, factory or instance the user passed in Python is defined (a file), or that it cannot be found."""
    target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    try:
        file = inspect.getsourcefile(target)
    except TypeError:
        file = None
    name = target.__qualname__
    if not file or not Path(file).is_file() or "<" in name:
        return {"name": name, "file": None}
    return {"file": str(Path(file).resolve()), "name": name, "sha256": file_sha256(file)}


def spec_name(source: dict[str, Any]) -> str:
    """The --model string that imports this code again."""
    return f"{source['file']}:{source['name']}" if source.get("file") else f"<{source['name']}, defined in no file>"


class UserNet(Classifier):
    """The user's network inside the one model contract; a tuple output (GoogLeNet's auxiliary heads) gives its first."""

    def __init__(self, net: nn.Module, name: str):
        try:
            head = find_last_layer(net)
        except TypeError:
            head = ""  # no Linear or 1x1 conv: heads cannot be reset or trained alone, the rest works
        super().__init__(net, head)
        self.display_name = name
        self.tuple_output = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            self.tuple_output = True
            out = out[0]
        return out

    @property
    def head(self) -> nn.Module:
        if not self.head_name:
            raise UserError(f"{self.display_name} has no Linear or 1x1 Conv2d last layer, so its head cannot be "
                            "reset or trained alone (--freeze-backbone, a new class count)")
        return super().head


def build(obj: Any, name: str, in_channels: int, num_classes: int, image_size: int, options: dict[str, Any],
          files: set[str]) -> UserNet:
    """An instance as it is; a class or factory called with `options` and the data's shape where it takes them."""
    if isinstance(obj, nn.Module):
        if options:
            raise UserError(f"--model-arg {', '.join(options)}: {name} is already built; pass its class instead")
        net = obj
    elif callable(obj):
        try:
            parameters = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            parameters = {}
        takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        given = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        kwargs = {k: v for k, v in given.items() if k in parameters or takes_all}
        unknown = [k for k in options if k not in parameters and not takes_all]
        if unknown:
            raise UserError(f"--model-arg {', '.join(unknown)}: {name} takes "
                            f"{', '.join(parameters) or 'no arguments'}")
        try:
            net = obj(**{**kwargs, **options})
        except Exception as e:
            raise UserCodeError(f"{name}({', '.join(f'{k}={v!r}' for k, v in {**kwargs, **options}.items())}) raised "
                                f"{type(e).__name__}: {e}", e, files) from None
        if not isinstance(net, nn.Module):
            raise UserError(f"{name} returned a {type(net).__name__}, not a torch.nn.Module")
    else:
        raise UserError(f"model must be a name, an nn.Module, or a class or function that builds one (got {type(obj).__name__})")
    return UserNet(net, name)


def check(model: UserNet, name: str, input_shape: tuple[int, ...], num_classes: int, files: set[str],
          batch: int = 2) -> list[str]:
    """A trial forward on a batch of the real input shape, before any training; returns notes."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(batch, *input_shape))
    except Exception as e:
        shape = "x".join(map(str, input_shape))
        raise UserCodeError(f"{name} failed on a batch of {batch} inputs of {shape}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}", e, files) from None
    finally:
        model.train(was_training)
    notes = []
    if model.tuple_output:
        notes.append(f"{name} returns a tuple (auxiliary outputs?): training uses its first output")
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise UserError(f"{name} should return one score per class for each image, a (batch, classes) tensor; "
                        f"it returned {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if out.shape[1] != num_classes:
        raise UserError(f"{name} outputs {out.shape[1]} values per image, the data has {num_classes} classes: "
                        "pass num_classes or change the last layer")
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"{name} has no trainable parameters; nothing would learn (were they frozen or made buffers?)")
    return notes


def _recorded_network(source: dict[str, Any], code: str | None) -> tuple[Any, dict[str, Any], list[str]]:
    """The network a checkpoint records, imported from its file or module (or `code`, the file it moved to): only a
    record of the shape training writes, and only an nn.Module class or a function defined there. The caller has
    made sure the user trusts it (dlkit/trust.py)."""
    ref = network_source(source, code)
    if not code and ref.where.endswith(".py") and not Path(ref.where).is_file():
        raise UserError(f"the model's code {ref.where} is gone; pass where it is now with --model-code FILE")
    obj, found = resolve(f"{code or ref.where}:{ref.name}", code)
    check_network_object(obj, _module_of(found), f"{found.get('file') or ref.where}:{ref.name}")
    notes = []
    if source.get("sha256") and found.get("sha256") != source["sha256"]:
        notes.append(f"{found.get('file')} changed since training (SHA-256 differs); its weights still have to "
                     "load strictly")
    return obj, found, notes


# Libraries whose functions build no network of the learner's (torch.hub.load, torch.load(weights_only=False) would
# run what a file names): a network's factory lives in the learner's own file or package.
LIBRARIES = frozenset({"torch", "torchvision", "numpy", "safetensors", "PIL", "pandas", "pyarrow", "yaml", "dlkit",
                       "onnx", "onnxscript", "onnxruntime", "optuna", "fastapi", "uvicorn", "captum", "sklearn",
                       "matplotlib", "tensorboard", "IPython", "tqdm"})


def check_network_object(obj: Any, module_name: str, label: str) -> None:
    """Only what training records is accepted as a network named by a string (a checkpoint, a run folder's config,
    --model): an nn.Module class, or a Python function defined in the module or file named (or a submodule of it),
    outside the standard library and the libraries above. A builtin such as os.system is not one, nor
    subprocess.getoutput or torch.hub.load."""
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        return
    home = getattr(obj, "__module__", None) or ""
    top = home.split(".")[0]
    if inspect.isfunction(obj) and (home == module_name or home.startswith(module_name + ".")) \
            and top not in sys.stdlib_module_names and top not in LIBRARIES:
        return
    raise UserError(f"{label} is not an nn.Module class or a function defined there; a network must be one of those "
                    "(a class or factory in your own file or package)")


def _module_of(found: dict[str, Any]) -> str:
    """The module name a resolved network lives in: the one load_module_file gave its file, or the import's."""
    return found["module"] if "module" in found else module_name_of_file(Path(found["file"]))


# ---- @dlkit.register_model -------------------------------------------------------------------------------------------

def register_model(name: str, help: str = "", default_size: int = 32) -> Callable:
    """Decorator: make a class or factory a model name, listed by `dlkit models` like the built-ins.

        @dlkit.register_model("tudui")
        class Tudui(nn.Module): ...
    """
    from .registry import MODELS

    def add(obj):
        source = source_of(obj)

        def builder(in_channels: int, num_classes: int, image_size: int, **options):
            return build(obj, name, in_channels, num_classes, image_size, options, {source.get("file") or ""})

        builder.__doc__ = help or (obj.__doc__ or f"{obj.__qualname__} from {source.get('file')}").strip().split("\n")[0]
        if name in MODELS and not MODELS.entry(name).info.get("user"):
            raise UserError(f"@dlkit.register_model({name!r}): {name} is a built-in model; choose another name")
        MODELS.register(name, help=builder.__doc__, replace=True, default_size=default_size, user=True)(builder)
        builder.source = source
        return obj

    return add


ENTRY_POINT_GROUP = "dlkit.models"
_entry_points_loaded = False


def load_models_from(paths) -> None:
    """--models-from: run the files whose @dlkit.register_model calls add names; and, once per process, the
    installed packages' `dlkit.models` entry points (a module that registers names, or a class or factory
    registered under the entry point's name), as timm's and pytest's plugins are found."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        load_entry_points()
    for path in paths or []:
        load_module_file(path)


def load_entry_points() -> list[str]:
    """Import every `dlkit.models` entry point; returns the names they made. A broken plugin is a warning only:
    one package's bug must not stop training another model."""
    import sys
    from importlib.metadata import entry_points

    from .registry import MODELS

    names = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = point.load()
        except Exception as e:  # noqa: BLE001 - third-party code
            print(f"warning: model plugin {point.name} ({point.value}) failed to load: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        if callable(obj) and point.name not in MODELS:
            register_model(point.name)(obj)
        names.append(point.name)
    return names


def create_user_model(obj_or_spec: Any, in_channels: int, num_classes: int, image_size: int,
                      options: dict[str, Any] | None = None, code: str | None = None,
                      source: dict[str, Any] | None = None) -> tuple[UserNet, dict[str, Any], list[str]]:
    """(the checked model, where its code came from, notes) for a spec string or a Python object.

    With `source` (a checkpoint's record), the code is imported from there (or from `code`) and a changed file
    is noted: the caller then loads the weights strictly, which tells whether the change still fits them.
    """
    notes: list[str] = []
    if source is not None:
        obj, found, notes = _recorded_network(source, code)
    elif isinstance(obj_or_spec, str):
        if obj_or_spec.startswith("<"):
            raise UserError(f"the model {obj_or_spec} was defined in no file (a notebook or the Python prompt), so it "
                            "cannot be imported again; pass the file that defines it with --model-code FILE")
        obj, found = resolve(obj_or_spec, code)
        check_network_object(obj, _module_of(found), obj_or_spec)
    else:
        obj, found = obj_or_spec, source_of(obj_or_spec)
    name = found["name"]
    files = {found.get("file") or ""}
    model = build(obj, name, in_channels, num_classes, image_size, dict(options or {}), files)
    notes += check(model, name, (in_channels, image_size, image_size), num_classes, files)
    return model, found, notes
