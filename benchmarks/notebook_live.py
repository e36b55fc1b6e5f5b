"""What the live notebook display costs training: the same run in one real Jupyter kernel with the display on and
off (DLKIT_LIVE=0), alternating, and the ratio of their times (issue 24: at most 2%).

The kernel is started and driven as a notebook server would (jupyter_client; ipykernel runs the code), and the
display messages really go out and are read back here. Per run the kernel reports, from run.summary, the seconds of
the training steps (timing.train_s: where the display's per-step work and its drawing thread land) and of the whole
fit (fit_s; wall_s runs from the kernel's start) and the process's CPU seconds; the first run of all is a warm-up
and not counted. The display's own account of its cost (the training thread's seconds on it, the drawing thread's
CPU seconds) is printed too: on a loaded machine, where the same run varies by more than the 2% sought, that figure
still holds.

    python benchmarks/notebook_live.py [--data PATH] [--model lenet-modern] [--epochs 2] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import fashion_dir, median  # noqa: E402

CELL = """
import json, os, time, dlkit
from dlkit.track.live import LiveDisplay
os.environ["DLKIT_LIVE"] = {live!r}
shown = [LiveDisplay()] if {live!r} == "1" else []   # the display dlkit.train adds itself, held to read its cost
cpu = time.process_time()
run = dlkit.train(data={data!r}, model={model!r}, epochs={epochs}, batch_size=128, tensorboard=False, report=False,
                  out={out!r}, callbacks=shown)
print("RESULT " + json.dumps({{"train_s": run.summary["timing"]["train_s"], "fit_s": run.summary["fit_s"],
                              "cpu_s": time.process_time() - cpu, **(shown[0].cost() if shown else {{}})}}))
"""


def execute(kc, code: str) -> tuple[dict, int]:
    """Run a cell; its RESULT line and how many display messages it sent."""
    msg_id = kc.execute(code)
    text, displays = "", 0
    while True:
        msg = kc.get_iopub_msg(timeout=1800)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "error":
            sys.exit("\n".join(msg["content"]["traceback"]))
        if kind == "stream":
            text += msg["content"]["text"]
        elif kind in ("display_data", "update_display_data"):
            displays += 1
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            line = next(line for line in text.splitlines() if line.startswith("RESULT "))
            return json.loads(line.removeprefix("RESULT ")), displays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="dataset (default: ../shared/data/fashion-mnist)")
    parser.add_argument("--model", default="lenet-modern")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs per side, alternating")
    args = parser.parse_args()
    data = args.data or str(fashion_dir())
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    rows: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            order = ["off"] + [side for _ in range(args.repeat) for side in ("on", "off")]  # off first: warm-up
            for n, side in enumerate(order):
                code = CELL.format(live="1" if side == "on" else "0", data=data, model=args.model,
                                   epochs=args.epochs, out=f"{tmp}/run{n}")
                result, displays = execute(kc, code)
                print(f"  run {n} display {side:<3}: steps {result['train_s']:.2f}s  fit {result['fit_s']:.2f}s"
                      f"  display messages {displays}" + ("  (warm-up, not counted)" if n == 0 else ""), flush=True)
                if n == 0:
                    continue
                for key, value in result.items():
                    rows[side].setdefault(key, []).append(value)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print(f"{args.model} on {data}, {args.epochs} epoch(s), batch 128, {args.repeat} runs per side in one kernel")
    for key, what in (("train_s", "training steps"), ("fit_s", "whole fit"), ("cpu_s", "process CPU")):
        on, off = rows["on"][key], rows["off"][key]
        print(f"  {what:<15} on {median(on):7.2f}s  off {median(off):7.2f}s  median on/off {median(on) / median(off):.3f}x"
              f"  best-of on/off {min(on) / min(off):.3f}x")
    on = rows["on"]
    own = [(a + b + c - d) / t for a, b, c, d, t in zip(on["hooks_s"], on["send_cpu_s"], on["draw_cpu_s"],
                                                       on["end_draw_cpu_s"], on["train_s"])]
    print(f"  the display's own cost during training as it counts it (the training thread's seconds on it + the "
          f"display thread's CPU sending and drawing, the last picture left out) / training steps: median "
          f"{median(own):.2%} [{', '.join(f'{v:.2%}' for v in own)}]")
    print(f"  per run: {median(on['updates']):.0f} updates, {median(on['draws']):.0f} pictures; training thread "
          f"{median(on['hooks_s']):.3f}s, sending {median(on['send_cpu_s']):.3f}s CPU, drawing "
          f"{median(on['draw_cpu_s']):.3f}s CPU; after the last step, the last picture: {median(on['end_s']):.3f}s "
          f"({median(on['end_draw_cpu_s']):.3f}s CPU drawing)")

if __name__ == "__main__":
    main()
