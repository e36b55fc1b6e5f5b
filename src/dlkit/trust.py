"""What a file from someone else may make dlkit run: nothing, unless the user trusts it. (No torch here: serve and
the CLI read it before anything heavy loads.)

A checkpoint's metadata (and a run folder's config.yaml) records which code builds its model: a registered name, a
torchvision model, or the learner's own network (a class or factory in a .py file or an importable module), plus
files whose @dlkit.register_model calls add names (`models_from`). The digest beside the metadata detects damage,
not intent, so anything the metadata names is read here as data first: dlkit's own registry and torchvision's
models load as they are; code outside them is imported only when the user says so (`--trust-code`,
`trust_code=True`, or `--model-code FILE` naming the file they trust), as Hugging Face's `trust_remote_code` and
torch.load's `weights_only` guard the same hole. Installed entry-point plugins are the user's own choice and stay
trusted; a checkpoint cannot make dlkit import a module by naming it.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class UntrustedCode(UserError):
    """A file names code outside dlkit's registry and torchvision; nothing of it was imported."""


@dataclass(frozen=True)
class CodeTrust:
    """The user's word on a file's code: trust all it names (`everything`), or only the network in `model_code`."""

    everything: bool = False
    model_code: str | None = None

    @classmethod
    def of(cls, trust_code: bool = False, model_code: str | Path | None = None) -> "CodeTrust":
        return cls(bool(trust_code), str(model_code) if model_code else None)


@dataclass(frozen=True)
class CodeRef:
    """One piece of code a file wants run: the learner's network (`module` or `file`, and `name`), or a models_from
    file."""

    what: str   # "network" or "models_from"
    where: str  # a module name or a file path
    name: str = ""

    def describe(self) -> str:
        if self.what == "models_from":
            return f"run the file {self.where} (models_from)"
        kind = "import the module" if not self.where.endswith(".py") else "run the file"
        return f"{kind} {self.where} and call its {self.name}"


def is_user_spec(name: Any) -> bool:
    """`file.py:Name` or `package.module:name`: the learner's own network (tv:<name> is torchvision's)."""
    return isinstance(name, str) and ":" in name and not name.startswith("tv:")


def network_source(source: Any, model_code: str | None = None) -> CodeRef:
    """The learner's network a checkpoint records (`model_source`), checked for the shape training writes: a
    name and a .py file or an importable module name, all strings (`model_code` replaces where it is). Nothing is
    imported."""
    if not isinstance(source, dict) or not isinstance(source.get("name"), str) or not source["name"].isidentifier():
        raise UserError("the checkpoint's model_source is not a network dlkit recorded (it needs a class or factory "
                        "name); the file is damaged or was not written by dlkit train")
    if model_code:
        return CodeRef("network", str(model_code), source["name"])
    module, file = source.get("module"), source.get("file")
    if isinstance(module, str):
        if not MODULE_NAME.fullmatch(module) or module.split(".")[0] in sys.stdlib_module_names | {"builtins"}:
            raise UserError(f"the checkpoint's model_source names the module {module!r}: not a module a network "
                            "is trained from; the file was not written by dlkit train")
        return CodeRef("network", module, source["name"])
    if isinstance(file, str) and file.endswith(".py"):
        return CodeRef("network", file, source["name"])
    if file is None and "module" not in source:
        raise UserError(f"the model {source['name']} was defined in no file (a notebook or the Python prompt), so it "
                        "cannot be imported again; pass the file that defines it with --model-code FILE")
    raise UserError("the checkpoint's model_source names neither a .py file nor a module; the file is damaged or "
                    "was not written by dlkit train")


def code_in_config(config: Any) -> list[CodeRef]:
    """The code a saved training config names: a user network spec (`--model file.py:Name`) and models_from files."""
    if not isinstance(config, dict):
        return []
    refs = []
    model = config.get("model")
    if isinstance(model, str) and is_user_spec(model):
        where, _, name = model.rpartition(":")
        refs.append(CodeRef("network", where, name))
    paths = config.get("models_from") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UserError("the saved config's models_from is not a list of file paths; the file is damaged")
    return refs + [CodeRef("models_from", p) for p in paths]


def code_in_checkpoint(meta: dict[str, Any], model_code: str | None = None) -> list[CodeRef]:
    """The code a checkpoint's metadata names: its network's source (when it is the learner's own) and the
    config's models_from files. A registered or tv: model name is no code of the file's: it is looked up in
    dlkit's registry."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    refs = [r for r in code_in_config({"models_from": config.get("models_from")}) if r.what == "models_from"]
    if "model_source" in meta:
        refs.insert(0, network_source(meta["model_source"], model_code))
    return refs


def require_trust(refs: list[CodeRef], origin: str | Path, trust: CodeTrust) -> None:
    """Refuse, in one line naming every piece of code, unless the user trusts what `origin` names. `model_code`
    covers the network only (it replaces the recorded file); models_from files need --trust-code."""
    if trust.everything:
        return
    untrusted = [r for r in refs if not (r.what == "network" and trust.model_code)]
    if untrusted:
        network = any(r.what == "network" for r in untrusted)
        raise UntrustedCode(f"{origin} wants to {'; and '.join(r.describe() for r in untrusted)}. Nothing from it was "
                            f"imported; if you trust it, pass --trust-code (Python: trust_code=True)"
                            + (", or --model-code FILE naming the network's file you trust" if network else ""))
