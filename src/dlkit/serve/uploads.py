"""Reading requests safely: the body counted as it arrives, multipart images and JSON rows parsed in memory.

Why not FastAPI's `UploadFile`: Starlette spools file parts to disk with no size cap, and a Content-Length check is
bypassed by a chunked upload. Here the bytes are counted while they stream in and the request is refused (413) the
moment it passes the cap; the capped body is then parsed in memory. Nothing in a request names a file on disk: a
part's filename is only echoed back as a label.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass


class HttpError(Exception):
    """A request the service refuses: answered as JSON {"error": message} with this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Part:
    name: str
    filename: str
    data: bytes


async def read_body(request, cap: int) -> bytes:
    """The request body, refused with 413 as soon as more than `cap` bytes have arrived (or are announced)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:  # refuse early when the client says so; never trust it otherwise
        raise HttpError(413, _too_large(int(declared), cap))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise HttpError(413, _too_large(size, cap, so_far=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, cap: int, so_far: bool = False) -> str:
    more = "over " if so_far else ""
    return (f"request too large: {more}{size / 2**20:.1f} MB, this server takes at most {cap / 2**20:.1f} MB "
            "(dlkit serve --max-upload-mb); send fewer or smaller images")


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """All parts of a multipart/form-data body, in memory."""
    from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise HttpError(415, f"expected multipart/form-data with the image in field 'file' (got "
                             f"{content_type or 'no Content-Type'}); e.g. curl -F file=@photo.jpg URL/predict")
    parts: list[Part] = []
    state: dict = {}

    def on_part_begin():
        state.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state.update(field=b"", value=b"")

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        parts.append(Part(_text(disposition.get(b"name", b"")), clean_filename(disposition.get(b"filename", b"")),
                          b"".join(state["data"])))

    callbacks = dict(on_part_begin=on_part_begin, on_header_field=on_header_field, on_header_value=on_header_value,
                     on_header_end=on_header_end, on_part_data=on_part_data, on_part_end=on_part_end)
    try:
        parser = MultipartParser(params[b"boundary"], callbacks)
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise HttpError(400, f"malformed multipart body ({e}); send the image as field 'file'") from None
    return parts


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def clean_filename(raw: bytes) -> str:
    """A part's filename as a label only: its last path component, printable, at most 120 characters."""
    name = re.split(r"[\\/]", _text(raw))[-1]
    if not name.isprintable():  # the rare name with control characters: drop them one by one
        name = "".join(ch for ch in name if ch.isprintable())
    return name[:120]


def image_parts(parts: list[Part], max_files: int) -> list[Part]:
    files = [p for p in parts if p.name == "file"]
    if not files:
        names = ", ".join(sorted({p.name for p in parts})) or "none"
        raise HttpError(400, f"no field 'file' in the form (fields: {names}); send each image as field 'file'")
    if len(files) > max_files:
        raise HttpError(413, f"{len(files)} images in one request; this server takes at most {max_files} "
                             "(dlkit serve --max-files)")
    for i, part in enumerate(files):
        part.filename = part.filename or f"image {i + 1}"
    return files


def parse_rows(body: bytes) -> list[dict]:
    """JSON rows for a table model: {"rows": [{column: value}, ...]}, a list of rows, or one row."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HttpError(400, f"the body is not JSON ({e}); send {{\"rows\": [{{\"column\": value, ...}}]}}") from None
    rows = data.get("rows") if isinstance(data, dict) and "rows" in data else data
    rows = [rows] if isinstance(rows, dict) else rows
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise HttpError(400, "expected rows as JSON objects: {\"rows\": [{\"column\": value, ...}, ...]}")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (dict, list)):
                raise HttpError(400, f"column {key!r} holds a {type(value).__name__}; a row's values are numbers, "
                                     "text, true/false or null")
    return rows
