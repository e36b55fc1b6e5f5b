"""Fixed overhead of a short run: the seconds a `dlkit train` process spends outside its training and validation
steps (process start to the first step, plus the last step to exit; the TensorBoard files and the report included),
against the reference floor of `python -c "import torch"`, measured in the same run.

Every repeat starts fresh processes in alternating order. Wall times are taken by this parent around each child
(interpreter start-up and exit included on both sides); the dlkit run reports, in its --json summary, the seconds of
its training and validation steps (train_s, val_s) and where the rest went (setup_s from process start to the first
step, write_s after the last). Goal (issue 14): overhead - import torch <= 1.5 s for the run below.

A second floor is measured too: `import torch` plus one torch.optim step. In torch 2.14 every optimizer's first
`add_param_group`/`step` imports torch._dynamo (~2 s here), so every PyTorch training script pays it, the course's
loop included; the overhead beyond that floor is what dlkit itself adds.

    python benchmarks/fixed_overhead.py [--repeat 5] [--tensorboard] [--epochs N]   (the report is written, as by default)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import fashion_dir, median  # noqa: E402

OPTIMIZER_STEP = ("import torch; w = torch.zeros(1, requires_grad=True); opt = torch.optim.AdamW([w]); "
                  "w.sum().backward(); opt.step()")
RUN = ["--model", "lenet-modern", "--optimizer", "adamw", "--schedule", "onecycle", "--amp", "--epochs", "1"]


def wall(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


ROWS = ("dlkit wall", "steps (train+val)", "setup (start -> 1st step)", "between epochs (training thread)",
        "writing (last step -> summary)", "exit (summary -> process gone)", "overhead")


def dlkit_run(argv: list[str], rows: dict[str, list[float]]) -> None:
    seconds, out = wall(argv)
    t = json.loads(out.strip().splitlines()[-1])["timing"]
    steps = t["train_s"] + t["val_s"]
    for name, value in zip(ROWS, (seconds, steps, t["setup_s"], t.get("tracking_s", 0.0), t["write_s"],
                                  max(0.0, seconds - t["total_s"]), seconds - steps)):
        rows[name].append(value)


def show(rows: dict[str, list[float]]) -> None:
    for name, values in rows.items():
        print(f"  {name:<32} {median(values):7.2f}   [{', '.join(f'{v:.2f}' for v in values)}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tensorboard", action="store_true",
                        help="also time the same run with TensorBoard on (the default), alternating with it off: "
                             "TensorBoard's writer must not slow the training steps")
    parser.add_argument("--epochs", type=int, default=1, help="more epochs show the per-epoch writing's share")
    args = parser.parse_args()
    data = fashion_dir()
    run = [*RUN[:-1], str(args.epochs)]  # RUN ends with --epochs 1
    dlkit = [sys.executable, "-m", "dlkit.cli.main", "train", "--data", str(data), *run, "--json", "-q"]
    floors = {"import torch": [], "import torch + 1 optimizer step": []}
    rows = {name: [] for name in ROWS}
    with_tb = {name: [] for name in ROWS}
    sides = ("torch", "dlkit", "dlkit+tb") if args.tensorboard else ("torch", "dlkit")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for side in sides[::-1] if r % 2 else sides:
                if side == "torch":
                    floors["import torch"].append(wall([sys.executable, "-c", "import torch"])[0])
                    floors["import torch + 1 optimizer step"].append(wall([sys.executable, "-c", OPTIMIZER_STEP])[0])
                elif side == "dlkit":
                    dlkit_run(dlkit + ["--no-tensorboard", "--out", f"{tmp}/run{r}"], rows)
                else:
                    dlkit_run(dlkit + ["--out", f"{tmp}/tb{r}"], with_tb)
    print(f"{args.epochs}-epoch Fashion-MNIST run: dlkit train {' '.join(run)} --no-tensorboard")
    print(f"{args.repeat} repeats, medians (seconds); each side a fresh process, alternating order")
    show(floors)
    show(rows)
    beyond = median(rows["overhead"]) - median(floors["import torch"])
    print(f"fixed overhead beyond import torch: {beyond:.2f} s (goal <= 1.5 s); "
          f"overhead / import torch = {median(rows['overhead']) / median(floors['import torch']):.2f}x")
    share = median(rows["between epochs (training thread)"]) / median(rows["steps (train+val)"])
    print(f"per-epoch writing on the training thread: {100 * share:.1f}% of the steps' time (goal <= 5%)")
    floor = median(floors["import torch + 1 optimizer step"])
    print(f"fixed overhead beyond import torch + 1 optimizer step: {median(rows['overhead']) - floor:.2f} s")
    if args.tensorboard:
        print("the same run with TensorBoard on (the default):")
        show(with_tb)
        ratio = median(with_tb["steps (train+val)"]) / median(rows["steps (train+val)"])
        print(f"training steps with TensorBoard / without: {ratio:.2f}x (its writer thread shares the cores: "
              f"near 1 is the goal)")


if __name__ == "__main__":
    main()
