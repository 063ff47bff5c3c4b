"""Every merge method on the offline demo, from one multirun: the README's results table.

    python benchmarks/demo_methods_table.py [--home DIR] [--out DIR] [--methods a,b,...]

Runs ``python main.py -m method=<all methods> logger=none`` once (the demo checkpoints are
fine-tuned first if ``--home`` has none), reads each job's ``results.json`` and prints a Markdown
table: per method the chosen hyperparameters and the mean Test accuracy, absolute and
normalized (merged / fine-tuned, per task, averaged), then the per-task absolute accuracies.
Task negation reports forgetting instead (target and control accuracy), on its own line.
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
from typing import Any

from machine import machine_line  # benchmarks/machine.py

from taskmerge.merging.registry import method_names

ROOT = Path(__file__).resolve().parents[1]
#: Every registered method (the README table's rows, in registry order).
METHODS = ",".join(method_names())


def run_multirun(home: Path, out: Path, methods: str) -> float:
    """One Hydra multirun over ``methods``; returns its wall seconds."""
    env = dict(os.environ, TASKMERGE_HOME=str(home), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "main.py"),
            "-m",
            f"method={methods}",
            "logger=none",
            f"hydra.sweep.dir={out}",
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return time.perf_counter() - start


def _format_value(value: Any, tasks: list[str] | None = None) -> str:
    if isinstance(value, dict):  # chosen per task (TALL masks), in task order
        order = [t for t in tasks or [] if t in value] or list(value)
        return "per task " + "/".join(_format_value(value[t]) for t in order)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _hyperparameters(results: dict) -> str:
    chosen = results.get("hyperparameters") or {}
    tasks = results.get("tasks")
    return ", ".join(f"{k}={_format_value(v, tasks)}" for k, v in chosen.items()) or "-"


def merge_table(results: list[dict]) -> str:
    """Markdown table of the multi-task results (negation excluded)."""
    rows = [r for r in results if r["method"] != "negation"]
    tasks = rows[0]["tasks"]
    head = ["method", "chosen", "abs. acc.", "norm. acc.", *tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        test = r["test"]
        cells = [
            r["method"],
            _hyperparameters(r),
            f"{100 * test['avg']['top1']:.1f}",
            f"{100 * test['avg']['normalized_top1']:.1f}",
            *(f"{100 * test[t]['top1']:.1f}" for t in tasks),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    fine_tuned = rows[0]["test"]
    cells = ["fine-tuned (each task its own)", "-", "", "100.0"]
    cells += [f"{100 * fine_tuned[t]['finetuned_top1']:.1f}" for t in tasks]
    cells[2] = f"{100 * sum(fine_tuned[t]['finetuned_top1'] for t in tasks) / len(tasks):.1f}"
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def negation_table(results: list[dict]) -> str:
    """Markdown lines for task negation: Test accuracy of the forgotten task and the controls."""
    lines = []
    for r in results:
        if r["method"] != "negation":
            continue
        report, test = r["report"], r["report"]["test"]
        lines.append(
            f"- negation of {report['target_task']} ({_hyperparameters(r)}): target "
            f"{100 * test['target/top1']:.1f}% (zero-shot "
            f"{100 * test['target/zeroshot_top1']:.1f}%, fine-tuned "
            f"{100 * test['target/finetuned_top1']:.1f}%), controls "
            f"{100 * test['control/top1']:.1f}% (zero-shot "
            f"{100 * test['control/zeroshot_top1']:.1f}%)"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the multirun (unless --out already holds one) and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="TASKMERGE_HOME (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="multirun dir (default: temp)")
    parser.add_argument("--methods", default=METHODS)
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    work = Path(tempfile.mkdtemp(prefix="taskmerge-methods-"))
    home = args.home or work / "home"
    out = args.out or work / "multirun"
    seconds = run_multirun(home, out, args.methods)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))]
    order = {m: i for i, m in enumerate(args.methods.split(","))}
    results.sort(key=lambda r: order.get(r["method"], len(order)))
    print(f"one multirun over {len(results)} methods in {seconds:.0f} s ({out})\n")
    print(merge_table(results))
    negation = negation_table(results)
    if negation:
        print("\n" + negation)


if __name__ == "__main__":
    main()
