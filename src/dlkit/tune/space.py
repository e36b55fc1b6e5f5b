"""A sweep's search space: `--param NAME=KIND:ARGS` parsed into Params, each suggested through an Optuna trial.

NAME is a TrainConfig field (lr, batch_size, weight_decay, ...) or a key of a dict field (model_args.dropout,
data_args.noise). KIND is a registered distribution; its ARGS are checked when parsed, and every value a trial can
draw is checked against the config before the first trial starts.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from ..errors import UserError
from ..registry import Registry

KINDS: Registry = Registry("--param kind")


@dataclass(frozen=True)
class Kind:
    form: str                                    # how it is written, for help and errors
    parse: Callable[[str], tuple]                # "1e-4:1e-1" -> (0.0001, 0.1); raises ValueError
    suggest: Callable[[Any, str, tuple], Any]    # (optuna trial, name, args) -> a value
    examples: Callable[[tuple], list]            # the values to check against the config up front


def _bounds(kind: type, positive: bool = False) -> Callable[[str], tuple]:
    def number(text: str):
        value = float(text)  # 1e3 is an int too
        if kind is int and value != int(value):
            raise ValueError(f"{text} is not a whole number")
        return kind(value)

    def parse(text: str) -> tuple:
        low_text, sep, high_text = text.partition(":")
        if not sep:
            raise ValueError("expected LOW:HIGH")
        low, high = number(low_text), number(high_text)
        if not low < high:
            raise ValueError(f"LOW must be below HIGH (got {low} and {high})")
        if positive and low <= 0:
            raise ValueError(f"a log scale needs LOW > 0 (got {low})")
        return low, high
    return parse


def _choices(text: str) -> tuple:
    import yaml

    values = tuple(yaml.safe_load(v) for v in text.split(",") if v.strip())
    if not values:
        raise ValueError("expected A,B,...")
    if not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
        raise ValueError("choices are numbers, words or true/false")
    return values


KINDS.register("loguniform", help="a float drawn on a log scale")(Kind(
    "loguniform:LOW:HIGH", _bounds(float, positive=True),
    lambda t, n, a: t.suggest_float(n, a[0], a[1], log=True), list))
KINDS.register("uniform", help="a float drawn evenly")(Kind(
    "uniform:LOW:HIGH", _bounds(float), lambda t, n, a: t.suggest_float(n, a[0], a[1]), list))
KINDS.register("int", help="an integer drawn evenly, both ends included")(Kind(
    "int:LOW:HIGH", _bounds(int), lambda t, n, a: t.suggest_int(n, a[0], a[1]), list))
KINDS.register("logint", help="an integer drawn on a log scale, both ends included")(Kind(
    "logint:LOW:HIGH", _bounds(int, positive=True), lambda t, n, a: t.suggest_int(n, a[0], a[1], log=True), list))
KINDS.register("choice", help="one of the listed values")(Kind(
    "choice:A,B,...", _choices, lambda t, n, a: t.suggest_categorical(n, list(a)), list))

FORMS = ", ".join(entry.obj.form for entry in KINDS)
# Not hyperparameters: where runs go, how they are split or launched, and what the objective itself is (the study's
# direction is fixed when it is created, from the data's task and --monitor).
NOT_SWEPT = ("out", "runs_dir", "folds", "fold", "refit", "recipe_defaults", "nproc_per_node", "monitor", "task",
             "target", "data")


@dataclass(frozen=True)
class Param:
    name: str      # "lr", or "model_args.dropout"
    kind: str
    args: tuple
    text: str      # as the user wrote it

    def suggest(self, trial) -> Any:
        return KINDS.get(self.kind).suggest(trial, self.name, self.args)


def parse_params(params: dict[str, str] | list[str] | tuple | None) -> tuple[Param, ...]:
    """--param strings ("lr=loguniform:1e-4:1e-1") or a {name: "kind:args"} dict -> Params; one line on a mistake."""
    items = [f"{k}={v}" for k, v in params.items()] if isinstance(params, dict) else list(params or [])
    if not items:
        raise UserError(f"a sweep needs at least one --param NAME=KIND:ARGS; KIND:ARGS is one of {FORMS} "
                        "(e.g. --param lr=loguniform:1e-4:1e-1)")
    parsed = [parse_param(text) for text in items]
    names = [p.name for p in parsed]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserError(f"--param {', '.join(duplicated)} is given more than once; keep one range per name")
    return tuple(parsed)


def parse_param(text: str) -> Param:
    name, sep, spec = str(text).partition("=")
    kind, _, args = spec.partition(":")
    name, kind = _field_name(name.strip()), kind.strip()
    if not sep or not name or kind not in KINDS:
        raise UserError(f"bad --param {text!r}: expected NAME=KIND:ARGS with KIND:ARGS one of {FORMS} "
                        "(e.g. lr=loguniform:1e-4:1e-1)")
    try:
        values = KINDS.get(kind).parse(args.strip())
    except ValueError as e:
        raise UserError(f"bad --param {text!r}: {e}; {kind} is written {KINDS.get(kind).form}") from None
    _check_name(name)
    return Param(name, kind, values, f"{name}={kind}:{args.strip()}")


def _field_name(name: str) -> str:
    field, dot, key = name.partition(".")
    return field.replace("-", "_") + (dot + key.replace("-", "_") if dot else "")


def _check_name(name: str) -> None:
    from ..config import TrainConfig

    field, dot, key = name.partition(".")
    kinds = {f.name: type(f.default_factory()) if callable(f.default_factory) else type(f.default)
             for f in fields(TrainConfig)}
    if field not in kinds or field in NOT_SWEPT:
        raise UserError(f"--param {name}: {field!r} is not a training option a sweep can vary; use a `dlkit train` "
                        "option such as lr, batch_size, weight_decay, or model_args.KEY")
    if kinds[field] is dict and not (dot and key):
        raise UserError(f"--param {name}: name one key of {field}, e.g. {field}.dropout=uniform:0:0.5")
    if dot and kinds[field] is not dict:
        raise UserError(f"--param {name}: only model_args and data_args take a .KEY; write --param {field}=...")


def apply_params(base_overrides: dict[str, Any], base_dicts: dict[str, dict], params: dict[str, Any]) -> dict[str, Any]:
    """The overrides of one trial: the sweep's train options with the trial's values; model_args.KEY values are
    merged into the base's model_args (from the command line or the config file), not replacing them."""
    out = dict(base_overrides)
    for name, value in params.items():
        field, dot, key = name.partition(".")
        if dot:
            out[field] = {**base_dicts.get(field, {}), **out.get(field, {}), key: value}
        else:
            out[field] = value
    return out


def check_values(base, base_overrides: dict[str, Any], space: tuple[Param, ...], config) -> None:
    """Every value a trial can draw (both ends of a range, every choice) must make a valid config."""
    from ..config import make_config

    dicts = base_dicts(base)
    for param in space:
        for value in KINDS.get(param.kind).examples(param.args):
            try:
                make_config(apply_params(base_overrides, dicts, {param.name: value}), config)
            except UserError as e:
                raise UserError(f"--param {param.text}: the value {value!r} is not valid: {e}") from None


def base_dicts(base) -> dict[str, dict]:
    return {"model_args": dict(base.model_args), "data_args": dict(base.data_args)}
