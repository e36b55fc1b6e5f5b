"""The page at / in a real headless Chromium: a person picks an image through the page's own file input and sees the
predicted class (a Chinese name) with its bars; a table model's form, built from its columns, is filled and sent.
Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no extra package).
A screenshot of each page is kept under tmp_path and copied to $DLKIT_TEST_ARTIFACTS when that is set."""
import base64
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dlkit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium)")
pytest.importorskip("fastapi", reason="dlkit serve needs its extras: pip install 'dlkit[serve]'")

from test_serve import backend, photos, run, table_run  # noqa: E402,F401 - the same trained models

from dlkit.serve import ServeSettings, create_app, load_backend  # noqa: E402


@contextmanager
def live_server(served):
    """The app on a real uvicorn, in a thread, on 127.0.0.1 at a free port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(served, ServeSettings()), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(30)


class Browser:
    """Headless Chromium, one page, DevTools commands over the pipe (NUL-terminated JSON, fds 3 and 4)."""

    def __init__(self, profile: Path, *flags: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire():  # in the child: the pipe DevTools expects on fds 3 (commands in) and 4 (answers out)
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        env = {**os.environ, "FONTCONFIG_FILE": str(_fonts_conf(profile))}
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
             f"--user-data-dir={profile}", "--window-size=1000,900", *flags, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire, pass_fds=(3, 4), env=env)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next, self._buffer, self.session = 0, b"", None

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self._next:
                    assert "error" not in reply, reply["error"]
                    return reply["result"]

    def _read(self, deadline: float):
        left = deadline - time.monotonic()
        assert left > 0 and select.select([self._from_chrome], [], [], left)[0], "Chromium did not answer in time"
        chunk = os.read(self._from_chrome, 1 << 20)
        assert chunk, "Chromium closed the pipe"
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while not self.js(expression):
            assert time.monotonic() < deadline, f"the page never showed {what}: {self.js('document.body.innerText')!r}"
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        artifacts = os.environ.get("DLKIT_TEST_ARTIFACTS")
        if artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(artifacts) / path.name)
        return path

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _fonts_conf(folder: Path) -> Path:
    """The system's fonts plus Noto Sans CJK from mplfonts (a test extra), so Chinese names render in screenshots."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = ""
    try:
        import mplfonts

        extra = f"<dir>{Path(mplfonts.__file__).parent / 'fonts'}</dir>"
    except ImportError:
        pass
    conf = folder / "fonts.conf"
    conf.write_text(f'<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
                    f'<include ignore_missing="yes">/etc/fonts/fonts.conf</include>{extra}</fontconfig>')
    return conf


@pytest.fixture
def browser(tmp_path):
    chrome = Browser(tmp_path / "profile")
    try:
        yield chrome
    finally:
        chrome.close()


def test_a_picked_image_shows_its_predicted_class_and_bars(run, backend, photos, browser, tmp_path):
    picked = photos[1]  # the bright one: 蜜蜂
    want = dlkit.load(run.dir).predict(picked, topk=2)
    with live_server(backend) as url:
        browser.open(url)
        browser.wait_for("document.body.dataset.state === 'ready'", "the drop zone")
        assert browser.js("document.getElementById('model').textContent") == "quick"
        picker = browser.js("""(() => { const r = document.getElementById('file').getBoundingClientRect();
            return {width: r.width, opacity: getComputedStyle(document.getElementById('file')).opacity,
                    links: document.querySelectorAll('#drop .pick').length}; })()""")
        assert picker["width"] <= 1 and picker["opacity"] == "0" and picker["links"] == 1  # one way to pick, not two
        root = browser.send("DOM.getDocument")["root"]["nodeId"]
        file_input = browser.send("DOM.querySelector", nodeId=root, selector="input#file")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=file_input, files=[str(picked)])  # as a person picks a file
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state)", "an answer")
        shown = browser.js("""(() => { const card = document.querySelector('.result');
            return {state: document.body.dataset.state, status: document.getElementById('status').textContent,
                    top: card && card.querySelector('.top-class').textContent,
                    names: card && [...card.querySelectorAll('.bar .name')].map(e => e.textContent),
                    pct: card && [...card.querySelectorAll('.bar .pct')].map(e => e.textContent),
                    width: card && card.querySelector('.bar .fill').style.width,
                    preview: card && card.querySelector('img').complete && card.querySelector('img').naturalWidth}
            })()""")
        shot = browser.screenshot(tmp_path / "serve_image_page.png")
    assert shown["state"] == "done", shown["status"]
    assert shown["top"] == want[0][0] == "蜜蜂"
    assert shown["names"] == [c for c, _ in want]
    assert shown["pct"][0] == f"{100 * want[0][1]:.1f}%"
    assert float(shown["width"].rstrip("%")) == pytest.approx(float(shown["pct"][0].rstrip("%")))  # the bar's length
    assert shown["preview"] == 40  # the picked photo itself, shown beside its bars
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape[1] == 1000 and pixels.std() > 10  # a drawn page, not a blank one


def test_a_table_models_form_is_built_from_its_columns_and_predicts(table_run, browser, tmp_path):
    with live_server(load_backend(table_run.dir)) as url:
        browser.open(url)
        browser.wait_for("document.body.dataset.state === 'ready'", "the form")
        names = browser.js("[...document.querySelectorAll('#fields [name]')].map(e => e.name + ':' + e.type)")
        assert names == ["size:number", "shade:select-one"]  # a category is a choice of the values seen in training
        choices = browser.js("[...document.querySelector('[name=shade]').options].map(o => o.value)")
        assert choices == ["", "dark", "light"]  # "" sends the value as missing
        browser.js("""document.querySelector('[name=size]').value = '6.2';
                      document.querySelector('[name=shade]').value = 'dark';
                      document.querySelector('#row-form button').click()""")
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state)", "an answer")
        cells = browser.js("[...document.querySelectorAll('table.result td')].map(e => e.textContent)")
        browser.screenshot(tmp_path / "serve_table_page.png")
    assert cells[0] == "巴布亚" and 0.5 < float(cells[1]) <= 1


# No host name resolves but 127.0.0.1's: the machine as it is offline, a CDN unreachable.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.mark.parametrize("page, drawn", [
    ("docs", "[...document.querySelectorAll('.swagger-ui .opblock-summary-path')].map(e => e.textContent)"),
    ("redoc", "[...document.querySelectorAll('.api-content h2')].map(e => e.textContent)")])
def test_docs_pages_draw_the_api_with_the_network_off(backend, tmp_path, page, drawn):
    offline = Browser(tmp_path / "profile", OFFLINE)
    try:
        with live_server(backend) as url:
            offline.open(url + page)
            offline.wait_for(f"{drawn}.some(t => t.includes('predict'))", f"/{page} drawn offline", seconds=60)
            shot = offline.screenshot(tmp_path / f"serve_{page}_offline.png")
    finally:
        offline.close()
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # a drawn page, not a blank one
