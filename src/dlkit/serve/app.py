"""create_app(backend, settings): the FastAPI service, a thin layer over a backend, a decode pool and a Batcher.

A request's path: its body is read with a byte cap (event loop), decoded on the pool (no model call there), queued to
the one inference thread, and answered as JSON. Every refusal is JSON {"error": "..."} with its status; nothing
that runs the model is awaited inside the event loop itself.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request  # at module level: FastAPI reads the endpoints' annotations from here
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .batcher import Batcher
from .docs import add_offline_docs
from .settings import ServeSettings
from .uploads import HttpError, image_parts, parse_multipart, parse_rows, read_body

log = logging.getLogger("dlkit.serve")

PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/app.css": ("app.css", "text/css; charset=utf-8")}

# How each modality's requests are read: (label, raw) items, then prepared on the pool.
READERS = {}


def reader(modality: str):
    def add(fn):
        READERS[modality] = fn
        return fn
    return add


@reader("image")
async def read_images(request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    body = await read_body(request, settings.max_upload_bytes)
    parts = image_parts(parse_multipart(body, request.headers.get("content-type", "")), settings.max_files)
    return [(p.filename, p.data) for p in parts]


@reader("table")
async def read_table_rows(request, settings: ServeSettings) -> list[tuple[str, list]]:
    return [("rows", parse_rows(await read_body(request, settings.max_upload_bytes)))]


def _limit_threads(n: int):
    """This thread's own intra-op thread count (torch keeps it per thread once the thread has asked for it)."""
    def apply():
        import torch

        torch.get_num_threads()  # first call settles this thread's count; only then does set_num_threads stick
        torch.set_num_threads(n)
    return apply


def _one_thread() -> None:
    from ..device import one_thread_here  # torch, imported when the service starts, not with the app

    one_thread_here()


class Service:
    """The running parts: the decode pool, the batcher, and the count of requests in flight."""

    def __init__(self, backend, settings: ServeSettings):
        self.backend, self.settings = backend, settings
        self.in_flight = 0
        self.pool: ThreadPoolExecutor | None = None
        self.batcher: Batcher | None = None

    def start(self) -> None:
        # The pool decodes with one torch thread each (a resize is a torch op); the worker gets all of them.
        self.batcher = Batcher(self.backend.run_batch, self.settings.max_batch, self.settings.max_wait_ms,
                               on_start=_limit_threads(self.settings.resolved_threads()))
        self.pool = ThreadPoolExecutor(self.settings.resolved_decode_workers(), thread_name_prefix="dlkit-decode",
                                       initializer=_one_thread)
        sample = self.backend.sample()
        if sample:  # the first request should not pay for lazy imports and the decoders' first use (this blocks
            # start-up only, before any request is accepted)
            try:
                self.batcher.submit(self.pool.submit(self.backend.prepare, *sample).result()).result()
            except HttpError:  # a --max-image-pixels below the warm-up image's: the first request warms up
                pass

    def stop(self) -> None:
        if self.batcher:
            self.batcher.close(self.settings.timeout_s)
        if self.pool:
            self.pool.shutdown(wait=True, cancel_futures=True)

    async def predict(self, request, topk: int, explain: bool = False) -> dict:
        items = await READERS[self.backend.modality](request, self.settings)
        pending = Pending(asyncio.get_running_loop(), len(items))
        self.batcher.expect(len(items))
        for index, (label, raw) in enumerate(items):
            self.pool.submit(self._prepare_and_queue, pending, index, label, raw, explain)
        try:
            results = await pending.future
        except BaseException:
            pending.give_up()  # a timeout or an error: what is still queued for this request is dropped
            raise
        for result in results:
            if isinstance(result, HttpError):
                raise result
        return {"model": self.backend.info["model"], **self.backend.respond([label for label, _ in items], results, topk)}

    def _prepare_and_queue(self, pending: Pending, index: int, label: str, raw, explain: bool = False) -> None:
        """On a pool thread: decode one item and queue it for the inference thread, which hands its result on."""
        if pending.given_up:
            self.batcher.withdraw(1)
            return
        try:
            item = self.backend.prepare(label, raw)
            item = self.backend.explaining(item) if explain else item  # ?explain=1: Grad-CAM on the same thread
        except BaseException as e:  # noqa: BLE001 - an HttpError (bad image) or a bug: the request answers it
            self.batcher.withdraw(1)  # no longer coming: the worker need not wait for it
            pending.fail(e)
            return
        pending.track(index, self.batcher.submit(item))


class Pending:
    """One request's items on their way through the pool and the batcher, as one asyncio future: resolved with all
    the results (in order) or the first error, by a single wake-up of the event loop per request (asyncio's
    run_in_executor, wrap_future and gather woke it two or three times per image: a sixth of the event loop's time
    at 32 clients, measured with py-spy)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int):
        self.loop, self.future = loop, loop.create_future()
        self.results: list = [None] * count
        self.left, self.given_up = count, False
        self._queued: list = []  # the batcher's futures, to cancel if the request gives up
        self._lock = threading.Lock()

    def track(self, index: int, future) -> None:
        self._queued.append(future)
        if self.given_up:  # gave up while this item was decoding
            future.cancel()
        future.add_done_callback(lambda done: self._finished(index, done))

    def _finished(self, index: int, done) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:
            return self.fail(done.exception())
        with self._lock:
            self.results[index] = done.result()
            self.left -= 1
            last = self.left == 0
        if last:
            self._wake(self.future.set_result, self.results)

    def fail(self, error: BaseException) -> None:
        self._wake(self.future.set_exception, error)

    def give_up(self) -> None:
        self.given_up = True
        for future in list(self._queued):
            future.cancel()

    def _wake(self, settle, value) -> None:
        def settle_once():
            if not self.future.done():
                settle(value)
        try:
            self.loop.call_soon_threadsafe(settle_once)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


async def within(seconds: float, awaitable):
    """await `awaitable`, or raise asyncio.TimeoutError after `seconds`; asyncio.timeout (Python 3.11+) does this
    without the extra task per request that wait_for makes."""
    if not hasattr(asyncio, "timeout"):
        return await asyncio.wait_for(awaitable, seconds)
    async with asyncio.timeout(seconds):
        return await awaitable


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(backend, settings: ServeSettings | None = None):
    """The service for one backend (`load_backend(...)`): POST /predict, GET /health, /info, /docs and the page.

    Example: `uvicorn.run(create_app(load_backend("runs/x")), host="127.0.0.1")`."""
    from ..data.images import set_max_image_pixels

    settings = settings or ServeSettings()
    set_max_image_pixels(settings.max_image_pixels)  # process-wide, as Pillow's limit is: from Python as from the CLI
    service = Service(backend, settings)

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        if callable(getattr(app.state, "on_ready", None)):  # e.g. serve() printing the URL once it answers
            app.state.on_ready()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title=f"dlkit serve: {backend.info['model']}", version=__version__, lifespan=lifespan,
                  description="POST images (multipart field `file`, repeatable) or JSON rows to /predict.",
                  docs_url=None, redoc_url=None)  # FastAPI's own pages load their scripts from a CDN
    add_offline_docs(app)
    app.state.service = service
    page = {path: (resources.files(__package__).joinpath("static", name).read_bytes(), kind)
            for path, (name, kind) in PAGE_FILES.items()}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"bad request: {where} {first.get('msg', '')}".strip())

    @app.exception_handler(Exception)
    async def bug(request, exc):  # logged with its traceback here; the client gets one JSON line
        log.exception("error while answering %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.post("/predict", openapi_extra=_predict_docs(backend), summary="predict images or rows")
    async def predict(request: Request, topk: int | None = None, explain: bool = False):
        if service.in_flight >= settings.max_in_flight:
            return error(503, f"busy: {service.in_flight} requests in flight (dlkit serve --max-in-flight); "
                              "retry in a second", {"Retry-After": "1"})
        service.in_flight += 1
        try:
            k = topk if topk and topk > 0 else settings.topk
            # a Response, so FastAPI skips jsonable_encoder's walk over every probability
            if explain and backend.modality != "image":
                raise HttpError(400, "explain=1 is for image models; `dlkit predict RUN rows.csv --explain` "
                                     "explains table rows")
            return JSONResponse(await within(settings.timeout_s, service.predict(request, k, explain)))
        except asyncio.TimeoutError:
            return error(504, f"no answer within {settings.timeout_s:g} s (dlkit serve --timeout-s); "
                              "try again, or with fewer images")
        except HttpError as e:
            return error(e.status, e.message, e.headers)
        finally:
            service.in_flight -= 1

    @app.get("/health", summary="liveness and load")
    async def health():
        b = service.batcher
        return {"status": "ok", "in_flight": service.in_flight, "queued": b.queued if b else 0,
                "batches_run": b.batches_run if b else 0, "items_run": b.items_run if b else 0,
                "last_batch_sizes": list(b.batches)[-20:] if b else []}

    @app.get("/info", summary="the model, its classes, input spec and training metrics")
    async def info():
        keep = ("max_batch", "max_wait_ms", "max_upload_mb", "max_in_flight", "timeout_s", "topk", "max_files")
        return {**backend.info, "dlkit": __version__, "settings": {k: getattr(settings, k) for k in keep}}

    for path, (body, kind) in page.items():  # three fixed files read at start-up: no request names a file
        app.add_api_route(path, _static(body, kind), methods=["GET"], include_in_schema=False)
    return app


def _static(body: bytes, kind: str):
    async def serve_file():
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})
    return serve_file


def _predict_docs(backend) -> dict:
    """The request body as /docs shows it (the endpoint reads the stream itself, so FastAPI cannot infer it)."""
    if backend.modality == "table":
        row = {c["name"]: None for c in backend.info["input"]["columns"][:6]}
        schema = {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object"}}},
                  "example": {"rows": [row]}}
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
    schema = {"type": "object", "required": ["file"],
              "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
