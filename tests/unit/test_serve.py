"""dlkit serve: /predict answers exactly what dlkit.load predicts (Chinese class names included), micro-batching on
one inference thread, every guard answered with JSON (413 streamed and bombs, 415/400, 503, 504, 500), tables, the
onnx backend, the CLI, and a real uvicorn process: a chunked upload refused, SIGTERM draining a request in flight."""
import asyncio
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import dlkit
from dlkit.cli.main import main
from dlkit.errors import UserError
from fakedata import make_class_folders

pytest.importorskip("fastapi", reason="dlkit serve needs its extras: pip install 'dlkit[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from dlkit.serve import ServeSettings, create_app, load_backend  # noqa: E402
from dlkit.serve.batcher import Batcher  # noqa: E402

CLASSES = ("蚂蚁", "蜜蜂")  # ants, bees: class names must survive JSON and the page as they are


_MADE: dict = {}  # what the fixtures made, once per test process: test_serve_browser.py uses them too


def once(key, make):
    if key not in _MADE:
        _MADE[key] = make()
    return _MADE[key]


def train_image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data = make_class_folders(root / "data", classes=CLASSES, per_class=12, size=20)
    return dlkit.train(data=str(data), model="quick", image_size=16, epochs=2, out=str(root / "run"), quiet=True,
                       tensorboard=False, report=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return once("run", lambda: train_image_run(tmp_path_factory))


@pytest.fixture(scope="module")
def backend(run):
    return once("backend", lambda: load_backend(run.dir))


def photo(path: Path, brightness: int, size=(40, 30), seed=0) -> Path:
    """A JPEG larger than the model's input, so the upload is decoded, resized and cropped as dlkit does it."""
    pixels = np.random.default_rng(seed).integers(0, 80, (size[1], size[0], 3), dtype=np.uint8) + np.uint8(brightness)
    Image.fromarray(pixels).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return once("photos", lambda: make_photos(tmp_path_factory.mktemp("photos")))


def make_photos(root):
    png = root / "gray.png"
    Image.fromarray(np.random.default_rng(4).integers(60, 200, (30, 50), dtype=np.uint8), "L").save(png)
    # small JPEGs (torchvision's decoder in dlkit predict), a large one (Pillow's draft mode) and a gray PNG
    return [photo(root / "dark one.jpg", 0, seed=1), photo(root / "明亮.jpg", 160, seed=2),
            photo(root / "mid.jpg", 90, (64, 48), seed=3), photo(root / "large.jpg", 40, (640, 480), seed=5), png]


@contextmanager
def serving(backend, raise_server_exceptions=True, **settings):
    with TestClient(create_app(backend, ServeSettings(**settings)),
                    raise_server_exceptions=raise_server_exceptions) as client:
        yield client


def files_of(*paths):
    return [("file", (p.name, p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg")) for p in paths]


def assert_json_error(response, status, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"], body
    for word in words:
        assert word in body["error"], body


def wait_until(condition, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


class Gated:
    """The real backend, whose batches wait at a gate (requests pile up meanwhile) and record where they ran."""

    def __init__(self, inner, fail=None):
        self.inner, self.fail = inner, fail
        self.gate = threading.Event()
        self.run_threads, self.prepare_threads, self.sizes = set(), set(), []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sample(self):
        return None  # no warm-up batch: it would wait at the closed gate

    def prepare(self, label, raw):
        self.prepare_threads.add(threading.current_thread().name)
        return self.inner.prepare(label, raw)

    def run_batch(self, items):
        self.run_threads.add(threading.current_thread().name)
        self.sizes.append(len(items))
        assert self.gate.wait(60)
        if self.fail:
            raise self.fail
        return self.inner.run_batch(items)


def post_in_thread(client, path, results, **kw):
    thread = threading.Thread(target=lambda: results.append(client.post(path, **kw)))
    thread.start()
    return thread


# ---- answers ---------------------------------------------------------------------------------------------------------

def test_predict_gives_the_probabilities_dlkit_load_gives_with_chinese_class_names(run, backend, photos):
    expected = dlkit.load(run.dir).predict(photos, topk=2)
    with serving(backend) as client:
        response = client.post("/predict?topk=2", files=files_of(*photos))
    assert response.status_code == 200, response.text
    assert "蚂蚁".encode() in response.content and "蜜蜂".encode() in response.content  # UTF-8, not \u escapes
    results = response.json()["results"]
    assert [r["file"] for r in results] == [p.name for p in photos]
    for got, want in zip(results, expected):
        assert [p["class"] for p in got["predictions"]] == [c for c, _ in want]
        assert [p["probability"] for p in got["predictions"]] == pytest.approx([p for _, p in want], abs=1e-6)
    assert {r["predictions"][0]["class"] for r in results[:2]} == set(CLASSES)  # dark -> 蚂蚁, bright -> 蜜蜂


def test_topk_defaults_to_the_setting_and_is_capped_by_the_classes(backend, photos):
    with serving(backend, topk=1) as client:
        one = client.post("/predict", files=files_of(photos[0])).json()["results"][0]["predictions"]
        many = client.post("/predict?topk=9", files=files_of(photos[0])).json()["results"][0]["predictions"]
    assert len(one) == 1 and len(many) == len(CLASSES)


def test_info_health_docs_and_page(run, backend):
    with serving(backend) as client:
        info = client.get("/info").json()
        assert info["model"] == "quick" and info["classes"] == list(CLASSES) and info["backend"] == "torch"
        assert info["input"]["image_size"] == 16 and info["input"]["channels"] == 3
        assert info["metrics"]["best_metrics"]["val_acc"] == pytest.approx(run.summary["best_val_acc"])
        assert "/" not in info["source"] and "/" not in info["metrics"]["data"]  # no paths of this machine
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/docs").status_code == 200
        body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]
        assert "file" in body["content"]["multipart/form-data"]["schema"]["properties"]
        page = client.get("/")
        assert page.headers["content-type"].startswith("text/html") and 'src="app.js"' in page.text
        script, css = client.get("/app.js"), client.get("/app.css")
        assert script.status_code == css.status_code == 200 and "predict" in script.text
        for text in (page.text, script.text, css.text):  # nothing fetched from elsewhere
            assert "http://" not in text and "https://" not in text and "//cdn" not in text
        assert_json_error(client.get("/static/../../etc/passwd"), 404)


def test_docs_and_redoc_load_their_scripts_from_this_server_only(backend):
    import re

    with serving(backend) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200 and "/openapi.json" in html.text
            linked = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert linked and all(url.startswith("/docs-assets/") for url in linked), linked  # no CDN, no fonts
            assert "https://" not in html.text and "http://" not in html.text
            for url in linked:
                asset = client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, url
        assert '"validatorUrl": null' in client.get("/docs").text
        assert client.get("/docs/oauth2-redirect").status_code == 200


# ---- micro-batching --------------------------------------------------------------------------------------------------

def test_requests_that_arrive_together_run_as_batches_of_at_most_max_batch_on_one_thread(backend, photos):
    gated = Gated(backend)
    results = []
    with serving(gated, max_batch=3, max_wait_ms=50) as client:
        threads = [post_in_thread(client, "/predict", results, files=files_of(photos[0]))]
        wait_until(lambda: gated.sizes == [1], "the first batch to start")
        threads += [post_in_thread(client, "/predict", results, files=files_of(photos[i % 3])) for i in range(7)]
        wait_until(lambda: client.get("/health").json()["queued"] == 7, "seven queued requests")
        gated.gate.set()
        for t in threads:
            t.join(60)
        health = client.get("/health").json()
    assert [r.status_code for r in results] == [200] * 8
    assert gated.sizes == [1, 3, 3, 1] and health["items_run"] == 8 and health["batches_run"] == 4
    assert gated.run_threads == {"dlkit-inference"}  # never the event loop, never the decode pool
    assert gated.prepare_threads and all(n.startswith("dlkit-decode") for n in gated.prepare_threads)


def test_a_lone_request_is_not_held_for_the_batch_wait(backend, photos):
    # were the worker to wait max_wait_ms (10 s, the most allowed) for company, the request would pass its 3 s
    # timeout and get 504; a lone request on this 16-px model takes milliseconds
    with serving(backend, max_wait_ms=10_000, timeout_s=3) as client:
        assert client.post("/predict", files=files_of(photos[0])).status_code == 200
        assert client.post("/predict", files=files_of(*photos)).status_code == 200


def test_the_inference_thread_uses_the_usable_cpus_by_default_and_threads_when_given(backend, photos):
    from dlkit.device import usable_cpus

    for settings, want in (({}, usable_cpus()), ({"threads": 1}, 1)):
        seen = []
        recorder = Gated(backend)
        recorder.gate.set()
        real_run = recorder.run_batch
        recorder.run_batch = lambda items: seen.append(torch.get_num_threads()) or real_run(items)
        with serving(recorder, **settings) as client:
            assert client.post("/predict", files=files_of(photos[0])).status_code == 200
        assert seen == [want], settings


def test_a_bad_image_among_good_ones_fails_its_request_and_leaves_no_wait_behind(backend, photos):
    # were the bad image still counted as coming, the next lone request would wait 10 s for it and get 504 at 5 s
    jpeg = photos[2].read_bytes()
    cut = ("file", ("cut.jpg", jpeg[:len(jpeg) // 2], "image/jpeg"))
    with serving(backend, max_wait_ms=10_000, timeout_s=5) as client:
        mixed = files_of(photos[0]) + [cut] + files_of(photos[1])
        assert_json_error(client.post("/predict", files=mixed), 400, "cut.jpg", "cannot decode")
        assert client.post("/predict", files=files_of(photos[0])).status_code == 200
        assert client.get("/health").json()["in_flight"] == 0


def test_batcher_keeps_order_and_hands_errors_to_each_waiter():
    batcher = Batcher(lambda xs: [x * 2 for x in xs], max_batch=4, max_wait_ms=1)
    futures = [batcher.submit(i) for i in range(10)]
    assert [f.result(30) for f in futures] == [i * 2 for i in range(10)]
    assert max(batcher.batches) <= 4 and batcher.items_run == 10
    batcher.close()

    def broken(xs):
        raise ValueError("no")

    # the worker waits (up to 60 s here) only for items it was told are coming; withdrawn, it runs what it has
    waiting = Batcher(lambda xs: [len(xs)] * len(xs), max_batch=8, max_wait_ms=60_000)
    waiting.expect(3)
    first = waiting.submit("a")
    wait_until(lambda: waiting.queued == 0, "the worker to take the first item")
    time.sleep(0.2)  # let it settle into waiting for the other two (were it not yet, the test would only be weaker)
    waiting.withdraw(2)  # e.g. the request's other two images were not images
    assert first.result(20) == 1
    waiting.close()

    failing = Batcher(broken, max_batch=4, max_wait_ms=1)
    with pytest.raises(ValueError):
        failing.submit(1).result(30)
    failing.close()


# ---- guards ----------------------------------------------------------------------------------------------------------

def multipart_body(name: str, data: bytes, boundary: str = "dlkitTESTboundary") -> tuple[bytes, str]:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_upload_cap_counts_the_bytes_as_they_arrive_even_chunked(backend):
    body, kind = multipart_body("big.jpg", os.urandom(3 * 2**20))
    with serving(backend, max_upload_mb=1) as client:
        chunks = (body[start:start + 2**16] for start in range(0, len(body), 2**16))  # no Content-Length: chunked
        assert_json_error(client.post("/predict", content=chunks, headers={"Content-Type": kind}), 413,
                          "too large", "--max-upload-mb")
        assert_json_error(client.post("/predict", content=body, headers={"Content-Type": kind}), 413, "too large")
        small, kind = multipart_body("small.bin", b"x" * 1000)
        assert client.post("/predict", content=small, headers={"Content-Type": kind}).status_code == 415


def test_a_chunked_upload_is_refused_once_past_the_cap_without_reading_the_rest(backend):
    # the ASGI app driven directly, counting the pieces it asks for (the test client would send them all anyway)
    body, kind = multipart_body("big.jpg", os.urandom(3 * 2**20))
    pieces = [body[start:start + 2**16] for start in range(0, len(body), 2**16)]
    taken, sent = [], []

    async def receive():
        taken.append(len(taken))
        if len(taken) > len(pieces):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": pieces[len(taken) - 1], "more_body": len(taken) < len(pieces)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", kind.encode()), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(create_app(backend, ServeSettings(max_upload_mb=1))(scope, receive, send))
    assert sent[0]["status"] == 413 and b"too large" in sent[1]["body"]
    assert len(taken) == 2**20 // 2**16 + 1, len(taken)  # refused at the first piece past 1 MB, not after all 3 MB


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, in a few dozen bytes (its pixels are never there)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_and_images_over_the_pixel_limit_are_refused(backend, photos, monkeypatch):
    with serving(backend) as client:
        bomb = [("file", ("bomb.png", bomb_png(100_000, 100_000), "image/png"))]
        assert_json_error(client.post("/predict", files=bomb), 413, "bomb.png", "too large", "10,000,000,000 pixels")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after: the setting is global
    with serving(backend, max_image_pixels=1000) as client:
        assert_json_error(client.post("/predict", files=files_of(photos[2])), 413, "3,072 pixels", "at most 1,000")
    with serving(backend, max_image_pixels=2000) as client:  # over the limit, but not twice over it
        assert_json_error(client.post("/predict", files=files_of(photos[2])), 413, "64x48 = 3,072 pixels")
        assert client.post("/predict", files=files_of(photos[1])).status_code == 200  # 40x30: under it


def test_what_is_not_an_image_is_refused_saying_what_was_wrong(backend, photos):
    jpeg = photos[2].read_bytes()
    with serving(backend) as client:
        text = [("file", ("notes.txt", b"hello, I am text", "text/plain"))]
        assert_json_error(client.post("/predict", files=text), 415, "notes.txt", "not an image")
        assert_json_error(client.post("/predict", files=[("file", ("empty.jpg", b"", "image/jpeg"))]), 415, "empty")
        cut = [("file", ("cut.jpg", jpeg[:len(jpeg) // 2], "image/jpeg"))]
        assert_json_error(client.post("/predict", files=cut), 400, "cut.jpg", "cannot decode")
        assert_json_error(client.post("/predict", content=jpeg, headers={"Content-Type": "image/jpeg"}), 415,
                          "multipart/form-data", "file")
        assert_json_error(client.post("/predict", files=[("picture", ("a.jpg", jpeg, "image/jpeg"))]), 400,
                          "no field 'file'", "picture")
        broken, kind = b"--x\r\nnonsense", "multipart/form-data; boundary=x"
        assert_json_error(client.post("/predict", content=broken, headers={"Content-Type": kind}), 400,
                          "no field 'file'")  # a cut body: no complete part in it
    with serving(backend, max_files=2) as client:
        assert_json_error(client.post("/predict", files=files_of(*photos)), 413, "5 images", "--max-files")


def test_a_filename_never_names_a_file_on_disk(backend, photos):
    with serving(backend) as client:
        evil = [("file", ("../../../etc/passwd", photos[0].read_bytes(), "image/jpeg"))]
        response = client.post("/predict", files=evil)
        assert response.status_code == 200 and response.json()["results"][0]["file"] == "passwd"  # a label only
        path_only = [("file", ("/etc/hostname", b"", "image/jpeg"))]
        assert_json_error(client.post("/predict", files=path_only), 415, "empty")  # its bytes, never the path's


def test_too_many_requests_in_flight_get_503_with_retry_after(backend, photos):
    gated, results = Gated(backend), []
    with serving(gated, max_in_flight=2) as client:
        threads = [post_in_thread(client, "/predict", results, files=files_of(photos[0])) for _ in range(2)]
        wait_until(lambda: client.get("/health").json()["in_flight"] == 2, "two requests in flight")
        busy = client.post("/predict", files=files_of(photos[0]))
        assert_json_error(busy, 503, "busy", "--max-in-flight")
        assert busy.headers["retry-after"] == "1"
        gated.gate.set()
        for t in threads:
            t.join(60)
        assert client.post("/predict", files=files_of(photos[0])).status_code == 200
    assert [r.status_code for r in results] == [200, 200]


def test_a_request_past_its_timeout_gets_504_and_its_queued_work_is_dropped(backend, photos):
    gated, results = Gated(backend), []
    with serving(gated, timeout_s=0.5) as client:
        threads = [post_in_thread(client, "/predict", results, files=files_of(photos[0]))]
        wait_until(lambda: gated.sizes == [1], "the first request to be running")
        threads.append(post_in_thread(client, "/predict", results, files=files_of(photos[1])))  # queued behind it
        for t in threads:
            t.join(60)
        for r in results:
            assert_json_error(r, 504, "0.5 s", "--timeout-s")
        gated.gate.set()
        wait_until(lambda: client.get("/health").json()["in_flight"] == 0, "the timed-out requests to end")
        assert client.post("/predict", files=files_of(photos[0])).status_code == 200
        health = client.get("/health").json()
    assert health["items_run"] == 2 and gated.sizes == [1, 1]  # the first (already running) and the last: the
    # queued one was dropped when its request gave up


def test_a_bug_is_a_json_500_without_traceback(backend, photos):
    gated = Gated(backend, fail=RuntimeError("something broke inside"))
    gated.gate.set()
    with serving(gated, raise_server_exceptions=False) as client:
        response = client.post("/predict", files=files_of(photos[0]))
        assert_json_error(response, 500, "internal error", "RuntimeError")
        assert "something broke" not in response.text
        assert client.get("/health").json()["in_flight"] == 0


# ---- tables ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    return once("table_run", lambda: train_table_run(tmp_path_factory))


def train_table_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    label = np.repeat(["阿德利", "巴布亚"], 40)
    frame = pd.DataFrame({"size": np.repeat([1.0, 6.0], 40) + rng.normal(0, 0.3, 80),
                          "shade": rng.choice(["light", "dark"], 80), "label": label})
    root = tmp_path_factory.mktemp("table")
    frame.to_csv(root / "t.csv", index=False)
    return dlkit.train(data=str(root / "t.csv"), target="label", epochs=4, out=str(root / "run"), quiet=True,
                       tensorboard=False, report=False)


def test_a_table_model_takes_json_rows_and_answers_like_dlkit_load(table_run):
    rows = [{"size": 0.8, "shade": "light"}, {"size": 6.5, "shade": "purple"}]
    expected, _ = dlkit.load(table_run.dir).predict_frame(pd.DataFrame(rows))
    with serving(load_backend(table_run.dir)) as client:
        info = client.get("/info").json()
        assert info["modality"] == "table" and sorted(info["classes"]) == sorted(["阿德利", "巴布亚"])
        assert {c["name"]: c["kind"] for c in info["input"]["columns"]} == {"size": "numeric", "shade": "categorical"}
        assert sorted(info["input"]["columns"][1]["choices"]) == ["dark", "light"]
        answer = client.post("/predict", json={"rows": rows}).json()
        assert [p["label"] for p in answer["predictions"]] == list(expected["label"]) == ["阿德利", "巴布亚"]
        assert [p["probability"] for p in answer["predictions"]] == pytest.approx(list(expected["probability"]))
        assert any("unknown bucket" in n for n in answer["notes"])  # "purple" was never seen
        assert client.post("/predict", json=rows[0]).status_code == 200  # one row as a bare object
        # a key left out is a missing value, as an empty cell is in a CSV: the same answer as a row with size empty
        left_out = client.post("/predict", json={"rows": [{"shade": "light"}, {"size": 6.5}]}).json()["predictions"]
        empty, _ = dlkit.load(table_run.dir).predict_frame(pd.DataFrame({"size": [None, 6.5], "shade": ["light", None]}))
        assert [p["probability"] for p in left_out] == pytest.approx(list(empty["probability"]))
        assert_json_error(client.post("/predict", json={"rows": [{"size": 1, "shade": "light", "sise": 2}]}), 400,
                          "'sise'", "did you mean 'size'")  # a misspelt column is never silently missing
        assert_json_error(client.post("/predict", json={"rows": [{"size": 1}, {}]}), 400, "row 2", "none of")
        assert_json_error(client.post("/predict", json="/etc/passwd"), 400, "rows")  # text is never a path
        assert_json_error(client.post("/predict", json={"rows": "/etc/passwd"}), 400, "rows")
        assert_json_error(client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"}),
                          400, "not JSON")
        assert_json_error(client.post("/predict", json={"rows": [{"size": [1, 2]}]}), 400, "'size'")


def test_python_dict_rows_treat_a_left_out_key_as_missing_and_refuse_an_unknown_one(table_run):
    model = dlkit.load(table_run.dir)
    left_out = model.predict([{"shade": "dark"}])
    empty = model.predict(pd.DataFrame({"size": [np.nan], "shade": ["dark"]}))
    assert list(left_out["probability"]) == pytest.approx(list(empty["probability"]))
    with pytest.raises(UserError, match="'colour'.*its columns: size, shade"):
        model.predict({"size": 2.0, "colour": "dark"})


# ---- the onnx backend ------------------------------------------------------------------------------------------------

def test_onnx_backend_answers_like_torch_from_a_run_or_an_onnx_file(run, backend, photos, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx backend needs pip install 'dlkit[export]'")
    with serving(backend) as client:
        want = client.post("/predict", files=files_of(*photos)).json()["results"]
    from_run = load_backend(run.dir, "onnx", threads=1)  # exported (and checked) on the way
    path = from_run.engine.path
    from_file = load_backend(path, "onnx")  # threads 0: onnxruntime's default here is 1 intra-op thread
    assert from_file.engine.threads == 1
    for onnx in (from_run, from_file):
        with serving(onnx) as client:
            assert client.get("/info").json()["backend"] == "onnx"
            got = client.post("/predict", files=files_of(*photos)).json()["results"]
        for g, w in zip(got, want):
            assert [p["class"] for p in g["predictions"]] == [p["class"] for p in w["predictions"]]
            assert [p["probability"] for p in g["predictions"]] == pytest.approx(
                [p["probability"] for p in w["predictions"]], abs=1e-4)
    with pytest.raises(UserError, match="--backend onnx"):
        load_backend(path, "torch")


# ---- the command -----------------------------------------------------------------------------------------------------

def test_cli_mistakes_are_one_line_errors(run, tmp_path, capsys, monkeypatch):
    for argv, words in ((["serve", str(tmp_path / "nope")], "does not exist"),
                        (["serve", str(run.dir), "--max-batch", "0"], "--max-batch must be at least 1"),
                        (["serve", str(run.dir), "--backend", "tensorflow"], None)):
        if words is None:
            with pytest.raises(SystemExit):
                main(argv)
            capsys.readouterr()
            continue
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the extra were not installed
    assert main(["serve", str(run.dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'dlkit[serve]'" in err, err


def test_binding_to_all_interfaces_warns():
    from dlkit.serve.server import exposure_warning

    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    for host in ("0.0.0.0", "::", ""):
        assert "all interfaces" in exposure_warning(host)


class FlattensWithView(torch.nn.Module):
    """A convnet whose forward calls .view on its activations, which fails on channels_last (NHWC) tensors."""

    def __init__(self, use_view: bool):
        super().__init__()
        self.conv, self.fc, self.use_view = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4 * 8 * 8, 2), use_view

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(len(y), -1) if self.use_view else y.flatten(1))


@pytest.mark.parametrize("use_view", [False, True])
def test_channels_last_is_kept_only_where_the_answers_stay_the_same(use_view):
    from dlkit.data.spec import PreprocessSpec
    from dlkit.infer.predictor import Predictor
    from dlkit.serve.backends import prefer_channels_last

    torch.manual_seed(0)
    spec = PreprocessSpec(image_size=8, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, class_names=("a", "b"))
    predictor = Predictor(FlattensWithView(use_view), spec, {}, torch.device("cpu"))
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    before = predictor.probabilities(images)
    prefer_channels_last(predictor)
    assert predictor.model.conv.weight.is_contiguous(memory_format=torch.channels_last) is not use_view
    assert torch.allclose(predictor.probabilities(images), before, atol=1e-6)


def test_uvicorn_runs_on_httptools_and_uvloop_where_installed():
    import importlib.util

    from dlkit.serve.server import uvicorn_config

    async def app(scope, receive, send):
        pass

    config = uvicorn_config(app, ServeSettings())
    assert (config.http, config.loop) == ("auto", "auto")  # uvicorn picks httptools and uvloop when present
    config.load()
    want = "HttpToolsProtocol" if importlib.util.find_spec("httptools") else "H11Protocol"
    assert config.http_protocol_class.__name__ == want


# ---- a real uvicorn process ------------------------------------------------------------------------------------------

def start_server(source, *flags):
    """`dlkit serve SOURCE --port 0` in a subprocess; returns it and the port it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "dlkit.cli.main", "serve", str(source), "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline().decode() if ready else ""
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read().decode()[-2000:]}")
    return proc, int(line.split("http://127.0.0.1:")[1].split("/")[0])


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def read_response(sock) -> tuple[int, dict]:
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body[:_length(data)])


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    return next(int(line.split(":")[1]) for line in head.split("\r\n") if line.startswith("content-length:"))


@pytest.fixture(scope="module")
def real_server(run):
    """One `dlkit serve` process for the tests below; the last of them stops it with SIGTERM."""
    proc, port = start_server(run.dir, "--max-upload-mb", "1", "--timeout-s", "60")
    yield proc, port
    stop(proc)


def test_real_server_refuses_a_chunked_upload_past_the_cap(real_server):
    proc, port = real_server
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
    sock.settimeout(5)
    chunk = b"%x\r\n%s\r\n" % (2**16, b"x" * 2**16)
    try:
        for _ in range(64):  # 4 MB at most, stopping as soon as the server answers
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(chunk)
    except OSError:  # the server closed the connection after refusing: what we want
        pass
    status, body = read_response(sock)
    assert status == 413 and "too large" in body["error"]


def test_sigterm_lets_the_request_in_flight_finish_then_exits(real_server, photos):
    proc, port = real_server
    body, kind = multipart_body(photos[1].name, photos[1].read_bytes())
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])  # a slow client: part of it

    def in_flight():
        with socket.create_connection(("127.0.0.1", port), timeout=30) as probe:
            probe.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return read_response(probe)[1]["in_flight"] == 1

    wait_until(in_flight, "the slow request to be in flight")
    proc.send_signal(signal.SIGTERM)

    def refusing():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return False
        except OSError:
            return True

    wait_until(refusing, "the server to stop accepting")  # shutting down, with our request still open
    assert proc.poll() is None
    sock.sendall(body[100:])
    status, answer = read_response(sock)
    assert status == 200 and answer["results"][0]["predictions"][0]["class"] in CLASSES
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
