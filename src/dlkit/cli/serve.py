"""`dlkit serve RUN|CHECKPOINT|MODEL.onnx`: the model behind HTTP, with a page at / (flags from ServeSettings)."""
from __future__ import annotations

import argparse
import typing
from dataclasses import fields


def register(sub: argparse._SubParsersAction) -> None:
    from ..serve.settings import ServeSettings  # dataclasses and dlkit.errors only: `dlkit --help` stays fast
    from .main import add_device_flag, add_trust_flags

    p = sub.add_parser("serve", help="serve a model over HTTP: POST /predict, a page at /, API docs at /docs")
    p.add_argument("source", metavar="RUN|CHECKPOINT|MODEL.onnx")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 opens it to the network, with a warning)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one and prints it)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                   help="torch eager, or onnxruntime (a run folder is exported first, checked against PyTorch)")
    add_device_flag(p, "the torch backend's device")
    add_trust_flags(p)
    hints = typing.get_type_hints(ServeSettings)
    for f in fields(ServeSettings):
        kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
        default = "" if f.default is None else f" (default: {f.default})"  # None: the help says what it means
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=f.default,
                       metavar="N" if kind in (int, float) else None, help=f"{f.metadata['help']}{default}")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.server import require_extras

    require_extras()  # before the model loads: one line naming the pip command
    from ..serve.server import serve
    from ..trust import CodeTrust
    from ..serve.settings import ServeSettings

    settings = ServeSettings(**{f.name: getattr(args, f.name) for f in fields(ServeSettings)})
    serve(args.source, args.backend, args.host, args.port, settings, args.device,
          CodeTrust.of(args.trust_code, args.model_code))
    return 0
