"""serve(): load the backend, bind the socket ourselves (so --port 0 prints the real port), run uvicorn.

uvicorn already drains on SIGTERM and Ctrl-C: it stops accepting, lets the requests in flight finish, then runs
the app's shutdown (the batcher runs what is queued). `timeout_graceful_shutdown` bounds that wait.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

from ..errors import UserError
from .settings import ServeSettings

EXTRAS = ("fastapi", "uvicorn", "python_multipart")
ALL_INTERFACES = ("0.0.0.0", "::", "")


def require_extras() -> None:
    """One line naming the pip command when FastAPI, uvicorn or python-multipart is missing."""
    import importlib

    for name in EXTRAS:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(f"dlkit serve needs {name.replace('_', '-')}, which is not installed: "
                            "pip install 'dlkit[serve]'") from None


def exposure_warning(host: str) -> str | None:
    """What to tell someone who opens the service to the whole network (None for loopback or one interface)."""
    if host in ALL_INTERFACES:
        return (f"listening on all interfaces ({host or '*'}): anyone who can reach this machine can use the model; "
                "use --host 127.0.0.1 unless that is intended")
    return None


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from None
    sock.listen(2048)
    return sock


def serve(source: str | Path, backend: str = "torch", host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, device: str = "cpu", trust=None, log=sys.stdout) -> None:
    """Serve a run folder, checkpoint or .onnx file until SIGTERM/Ctrl-C. Blocks. `trust` (a CodeTrust): the code
    a checkpoint names may be imported."""
    require_extras()
    import uvicorn

    from ..data.images import set_max_image_pixels
    from .app import create_app
    from .backends import load_backend

    settings = settings or ServeSettings()
    set_max_image_pixels(settings.max_image_pixels)
    app = create_app(load_backend(source, backend, settings.threads, device, trust, settings.tta), settings)
    sock = bind(host, port)
    warning = exposure_warning(host)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    info = app.state.service.backend.info
    app.state.on_ready = lambda: print(  # after the warm-up: from this line on, requests are answered at full speed
        f"serving {info['model']} ({info['modality']}, {backend} backend) on http://{shown}:{sock.getsockname()[1]}/"
        "  (API docs at /docs; Ctrl-C or SIGTERM stops after the requests in flight)", file=log, flush=True)
    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])


def uvicorn_config(app, settings: ServeSettings):
    """How dlkit serve runs uvicorn (benchmarks/serve.py runs its naive reference the same way).

    http and loop "auto": httptools' C parser and uvloop where installed (`dlkit[serve]` brings both), else uvicorn's
    pure-Python h11 and asyncio's own loop, which cost more CPU per request."""
    import uvicorn

    return uvicorn.Config(app, http="auto", loop="auto", log_level="warning", limit_concurrency=None,
                          timeout_graceful_shutdown=int(settings.timeout_s) + 5, server_header=False)
