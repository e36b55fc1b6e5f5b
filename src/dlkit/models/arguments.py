"""Model arguments as data: a registered or torchvision model takes only the arguments its builder declares, each a
value of the declared kind (a number, a flag, a word, a list of numbers). They come from --model-arg, a config file
or a checkpoint's metadata, so anything else is refused by name before the builder runs."""
from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence
from typing import Any, Callable

from ..errors import UserError

SCALARS = {int: "a whole number", float: "a number", bool: "true or false", str: "a word"}


def declared_arguments(builder: Callable, model_class: type | None = None) -> dict[str, inspect.Parameter]:
    """The keyword arguments `builder` declares whose kind a flag or file can hold (and, for torchvision, those of
    the model class it builds, where its **kwargs go). An argument that takes code (norm_layer) is not one."""
    params: dict[str, inspect.Parameter] = {}
    for fn in (builder, getattr(model_class, "__init__", None)):
        if fn is None:
            continue
        for name, p in inspect.signature(fn, eval_str=True).parameters.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and _kind(p.annotation, p.default):
                params.setdefault(name, p)
    return params


def check_arguments(model: str, args: dict[str, Any], declared: dict[str, inspect.Parameter]) -> None:
    """Raise UserError naming the first argument that `declared` lacks, or whose value is not of its kind."""
    if not isinstance(args, dict):
        raise UserError(f"model {model}: its arguments must be a mapping of names to values, not {type(args).__name__}")
    for name, value in args.items():
        if name not in declared:
            takes = ", ".join(declared) or "no arguments"
            raise UserError(f"bad option for model {model}: it takes no argument {name!r} (it takes {takes}); "
                            "see `dlkit models`")
        p = declared[name]
        kind = _kind(p.annotation, p.default)
        if not _fits(value, kind):
            raise UserError(f"bad option for model {model}: {name}={_short(value)} is not {_describe(kind)}")


def _kind(annotation: Any, default: Any) -> Any:
    """The annotation, or the default's type where there is none; None when it is not a plain value's kind."""
    if annotation is inspect.Parameter.empty:
        if default is inspect.Parameter.empty or default is None:
            return typing.Union[int, float, bool, str, None]
        annotation = type(default)
    return annotation if _plain(annotation) else None


def _plain(kind: Any) -> bool:
    if kind in SCALARS or kind in (type(None), list, tuple):
        return True
    origin, parts = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        return all(_plain(p) for p in parts)
    if origin in (list, tuple, Sequence):
        return all(_plain(p) for p in parts if p is not Ellipsis)
    return False


def _fits(value: Any, kind: Any) -> bool:
    origin, parts = typing.get_origin(kind), typing.get_args(kind)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin is typing.Union:
        return any(_fits(value, p) for p in parts)
    if kind in (list, tuple) or origin in (list, tuple, Sequence):
        items = [p for p in parts if p is not Ellipsis] or [typing.Union[int, float]]
        if not isinstance(value, (list, tuple)):  # hidden=256 for hidden=(256,): a one-item list, as the builders do
            return kind in (list, tuple) and _fits(value, items[0])
        return all(any(_fits(v, k) for k in items) for v in value)
    return False


def _describe(kind: Any) -> str:
    origin, parts = typing.get_origin(kind), typing.get_args(kind)
    if kind in SCALARS:
        return SCALARS[kind]
    if kind is type(None):
        return "empty"
    if origin is typing.Union:
        return " or ".join(dict.fromkeys(_describe(p) for p in parts))
    return "a list of numbers"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
