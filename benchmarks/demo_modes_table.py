"""Fine-tuning modes side by side on the offline demo: single-task and merged accuracy, and the
disentanglement heatmaps (the README's mode comparison).

    python benchmarks/demo_modes_table.py [--home DIR] [--out DIR] [--pair Digits,Shapes] [--quick]

Runs, with one TASKMERGE_HOME (checkpoints of every mode are fine-tuned on first use):
* ``main.py -m finetuning=standard,linear,attention method=sum,ties,TSVM logger=none``;
* ``main.py -m finetuning=standard eval_forward=linear method=sum,ties,TSVM logger=none``
  (post-hoc linearization: the standard checkpoints through the linearized model);
* ``analyze.py analysis.modes=[standard,linear,standard@linear,attention] DATASETS=[pair]
  analysis.grid_points=15`` (the reference grid).
``--quick``: every run on the pair's two tasks only and a 5 x 5 analysis grid.
Prints one Markdown table (Test top-1 %, absolute and normalized; fine-tuned = each task's own
checkpoint through the run's forward) and the mean disentanglement error per mode, and leaves
the heatmaps in ``<out>/analysis/disentanglement.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_line  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sum", "ties", "TSVM")
MODES = "standard,linear,standard@linear,attention"
ROWS = (
    ("standard", "nonlinear", "standard"),
    ("linear", "linear", "linear (tangent)"),
    ("standard", "linear", "post-hoc linear"),
    ("attention", "nonlinear", "attention-only"),
)


def run(script: str, args: list[str], home: Path) -> float:
    """Run one entry point; returns its wall seconds."""
    env = dict(os.environ, TASKMERGE_HOME=str(home), HF_HUB_OFFLINE="1")
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / script), *args], check=True, env=env, cwd=ROOT)
    return time.time() - start


def _cell(avg: dict) -> str:
    return f"{100 * avg['top1']:.1f} / {100 * avg['normalized_top1']:.1f}"


def table(results: list[dict]) -> str:
    """Rows: mode (and forward); columns: fine-tuned and each method, absolute / normalized."""
    cells = {(r["finetuning"], r["eval_forward"], r["method"]): r for r in results}
    head = "| mode | fine-tuned | " + " | ".join(f"{m} abs. / norm." for m in METHODS) + " |"
    lines = [head, "|---" * (2 + len(METHODS)) + "|"]
    for mode, forward, label in ROWS:
        row = [cells.get((mode, forward, m)) for m in METHODS]
        present = [r for r in row if r]
        if not present:
            continue
        tasks = present[0]["tasks"]
        finetuned = sum(present[0]["finetuned"][t]["test_top1"] for t in tasks) / len(tasks)
        values = [_cell(r["test"]["avg"]) if r else "-" for r in row]
        lines.append(f"| {label} | {100 * finetuned:.1f} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run everything (or read ``--out``) and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="TASKMERGE_HOME (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: temp)")
    parser.add_argument("--pair", default="Digits,Shapes", help="the disentanglement task pair")
    parser.add_argument("--skip-runs", action="store_true", help="only read --out")
    parser.add_argument("--quick", action="store_true", help="the pair's tasks, a 5 x 5 grid")
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    work = Path(tempfile.mkdtemp(prefix="taskmerge-modes-"))
    home, out = args.home or work / "home", args.out or work / "out"
    methods = "method=" + ",".join(METHODS)
    tasks = [f"DATASETS=[{args.pair}]"] if args.quick else []
    grid = 5 if args.quick else 15  # 15: the reference grid
    if not args.skip_runs:
        seconds = run(
            "main.py",
            ["-m", "finetuning=standard,linear,attention", methods, "logger=none", *tasks,
             f"hydra.sweep.dir={out / 'modes'}"],
            home,
        )  # fmt: skip
        seconds += run(
            "main.py",
            ["-m", "finetuning=standard", "eval_forward=linear", methods, "logger=none", *tasks,
             f"hydra.sweep.dir={out / 'posthoc'}"],
            home,
        )  # fmt: skip
        seconds += run(
            "analyze.py",
            [f"DATASETS=[{args.pair}]", f"analysis.modes=[{MODES}]", "logger=none",
             f"analysis.grid_points={grid}",
             f"hydra.run.dir={out / 'analysis'}"],
            home,
        )  # fmt: skip
        print(f"\nall runs: {seconds:.0f} s ({out})\n")
    results = [json.loads(p.read_text()) for p in sorted(out.rglob("results.json"))]
    print(table(results))
    analysis = json.loads((out / "analysis" / "disentanglement.json").read_text())
    print(f"\ndisentanglement error of {' / '.join(analysis['tasks'])} ({analysis['split']}), "
          f"{grid} x {grid} grid on [-2, 2]:")  # fmt: skip
    for item in analysis["results"]:
        print(f"- {item['label']}: mean xi {item['mean_xi']:.3f}, max {item['max_xi']:.3f}")
    print(f"\nheatmaps: {out / 'analysis' / 'disentanglement.png'}")


if __name__ == "__main__":
    main()
