"""dlkit.train in a real Jupyter kernel (ipykernel, driven by jupyter_client as a notebook server would): one live
display updated in place during the epoch, ending with the epochs table and the curves; quiet=True shows nothing.
One kernel serves every test here (a kernel start costs seconds)."""
import base64
import re

import pytest

pytest.importorskip("ipykernel", reason="the test extra installs ipykernel and nbclient")
manager = pytest.importorskip("jupyter_client.manager")

# Every step updates the display, and waits until the display thread has sent it (the thread drops views it had no
# time for): the test counts updates, which must not depend on how fast this machine is.
SETUP = """import dlkit, dlkit.track.live as live
live.INTERVAL = 0.0
live.FIGURE_INTERVAL = 0.0
class Flush:
    def on_batch_end(self, trainer, batch_size, loss):
        assert all(c.flush(30) for c in trainer.callbacks if isinstance(c, live.LiveDisplay))
"""
TRAIN = ("run = dlkit.train(data='digits', model='softmax', epochs=2, batch_size=128, tensorboard=False, "
         "callbacks=[Flush()], {extra})\n")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("kernel")
    km, kc = manager.start_new_kernel(kernel_name="python3", cwd=str(cwd))
    try:
        yield kc, cwd
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, timeout: float = 300) -> list[dict]:
    """The cell's iopub messages, up to the kernel going idle; a cell that raised fails the test with its traceback."""
    msg_id = kc.execute(code)
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            pytest.fail("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
        messages.append(msg)


def displays(messages: list[dict]) -> list[tuple[str, str, str]]:
    """(message type, display id, HTML) of every display and display update."""
    return [(m["msg_type"], m["content"].get("transient", {}).get("display_id"), m["content"]["data"].get("text/html"))
            for m in messages if m["msg_type"] in ("display_data", "update_display_data")]


def test_the_live_display_updates_in_place_during_the_epoch_and_ends_with_table_and_curves(kernel):
    kc, cwd = kernel
    messages = execute(kc, SETUP + TRAIN.format(extra=f"out={str(cwd / 'live')!r}"))
    shown = displays(messages)
    text = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "epoch 1/2" not in text and "data:" in text  # the display shows the epochs; the data line still prints
    assert shown and shown[0][0] == "display_data"
    display_id = shown[0][1]
    assert display_id and all(kind == "update_display_data" and did == display_id for kind, did, _ in shown[1:])
    steps = {int(m) for _, _, html in shown if html and (m := _step_of(html, epoch=1))}
    assert len(steps) > 1  # more than one update within the first epoch, at different steps
    final = shown[-1][2]
    best = _kernel_value(kc, "run.summary['best_value']")
    assert "finished: best val_acc" in final and f"{best:.4f}" in final
    assert final.count("<tr>") == 1 + 2  # the header and both epochs
    pictures = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", final)
    assert len(pictures) == 1 and base64.b64decode(pictures[0]).startswith(b"\x89PNG")  # the curves


def _step_of(html: str, epoch: int) -> str | None:
    found = re.search(rf"epoch {epoch}/2, step (\d+)/", html)
    return found.group(1) if found else None


def _kernel_value(kc, expression: str) -> float:
    out = [m["content"]["text"] for m in execute(kc, f"print(repr({expression}))") if m["msg_type"] == "stream"]
    return float("".join(out))


def test_a_quiet_run_in_a_kernel_displays_and_prints_nothing(kernel):
    kc, cwd = kernel
    messages = execute(kc, SETUP + TRAIN.format(extra=f"quiet=True, out={str(cwd / 'quiet')!r}"))
    assert [m["msg_type"] for m in messages if m["msg_type"] not in ("status", "execute_input")] == []
    assert (cwd / "quiet" / "checkpoints" / "best.safetensors").is_file()  # it did train


def test_dlkit_live_0_turns_the_display_off_and_leaves_the_plain_lines(kernel):
    kc, cwd = kernel
    code = "import os\nos.environ['DLKIT_LIVE'] = '0'\n" + SETUP + TRAIN.format(extra=f"out={str(cwd / 'off')!r}") \
        + "del os.environ['DLKIT_LIVE']\n"
    messages = execute(kc, code)
    text = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert displays(messages) == [] and "epoch 2/2" in text
