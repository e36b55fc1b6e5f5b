"""Seconds from spawn to exit, and the accuracy reached, of `dlkit train --recipe fast` (issue 23) against dlkit's
best recipe before it (benchmarks/time_to_accuracy.py's BEST: BatchNorm LeNet, AdamW one-cycle, 4 epochs), on
Fashion-MNIST and MNIST, each --repeat times in fresh processes, medians compared.

Both sides are the same command line (`dlkit train --data D ... --stop-at GOAL --no-tensorboard --no-report -q`),
timed alike by this parent from spawning the process to its exit, accuracy read from the run's summary.json, and
the seconds from process start to the end of the validation that first reached the goal (summary.json's `stopped`,
as --stop-at records it): the validation split
is the dataset's own test split (10,000 images). The fast recipe's figure is its final accuracy with its test-time
augmentation (TTA), measured inside that same wall time; its plain accuracy is printed beside it. The recipes differ
on purpose: the ratio is "how much sooner, and how much better", not a like-for-like speed figure.

    python benchmarks/recipes.py                  # both datasets, 3 repeats
    python benchmarks/recipes.py --data mnist --repeat 5
    python benchmarks/recipes.py --device cuda    # the recipe's GPU scale (widths 64,256,256, batch 2000, 8 epochs)

Goals (issue 23): on a 2-core CPU Fashion-MNIST >= 0.92 within 60 s and MNIST >= 0.99 within 20 s; on one H200,
Fashion-MNIST >= 0.94 within 10 s.
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
from common import SHARED, median  # noqa: E402
from time_to_accuracy import BEST  # noqa: E402

DATASETS = {"fashion-mnist": SHARED / "fashion-mnist", "mnist": SHARED / "mnist"}
GOALS = {("fashion-mnist", "cpu"): (0.92, 60), ("mnist", "cpu"): (0.99, 20), ("fashion-mnist", "cuda"): (0.94, 10)}


def flags(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        out += ([flag] if value else [f"--no-{key.replace('_', '-')}"]) if isinstance(value, bool) else [flag, str(value)]
    return out


def one_run(data: Path, side: list[str], device: str, out: Path, target: float | None) -> dict:
    stop = ["--stop-at", str(target)] if target else []  # records when the validation first reached the goal
    command = [sys.executable, "-m", "dlkit", "train", "--data", str(data), "--device", device, *side, *stop,
               "--out", str(out), "--no-tensorboard", "--no-report", "-q"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    plain = summary["val_acc"]  # the last epoch's, which the TTA pass uses too
    tta = (summary.get("tta") or {}).get("val_acc")
    stopped = summary.get("stopped") or {}
    return {"wall_s": wall, "plain": plain, "acc": tta if tta is not None else plain, "epochs": summary["epochs"],
            "reached_s": stopped.get("seconds_from_process_start")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=sorted(DATASETS), action="append", help="default: both")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    sides = {"before (BEST)": flags(BEST[args.device]), "--recipe fast": ["--recipe", "fast"]}
    for name in args.data or sorted(DATASETS):
        data = DATASETS[name]
        if not data.is_dir():
            print(f"skipped {name}: {data} not found")
            continue
        results = {side: [] for side in sides}
        print(f"{name} on {args.device}, {args.repeat} repeat(s), alternating sides: seconds from spawn to exit")
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeat):
                for side, options in sides.items():
                    goal = GOALS.get((name, args.device))
                    r = one_run(data, options, args.device, Path(tmp) / f"{i}-{len(results[side])}-{side[:6]}",
                                goal[0] if goal else None)
                    results[side].append(r)
                    reached = f"{r['reached_s']:.1f}s" if r["reached_s"] is not None else "never"
                    print(f"  {side:<14} {r['wall_s']:6.1f}s  accuracy {r['acc']:.4f} (plain {r['plain']:.4f}, "
                          f"{r['epochs']} epochs; goal reached {reached} from process start)", flush=True)
        table = {side: (median([r["wall_s"] for r in rs]), median([r["acc"] for r in rs])) for side, rs in results.items()}
        (ref_s, ref_acc), (fast_s, fast_acc) = table["before (BEST)"], table["--recipe fast"]
        print(f"  median  before {ref_s:.1f}s acc {ref_acc:.4f}  |  fast {fast_s:.1f}s acc {fast_acc:.4f}  |  "
              f"{ref_s / fast_s:.2f}x sooner, accuracy {fast_acc - ref_acc:+.4f}")
        goal = GOALS.get((name, args.device))
        if goal:
            reached = [r["reached_s"] for r in results["--recipe fast"]]
            at = median(reached) if None not in reached else None
            met = at is not None and at <= goal[1]
            print(f"  goal: >= {goal[0]} within {goal[1]} s from process start: median reached at "
                  f"{f'{at:.1f} s' if at is not None else 'never'} ({'met' if met else 'not met'}); spawn to exit, "
                  f"TTA pass included: {fast_s:.1f} s\n")


if __name__ == "__main__":
    main()
