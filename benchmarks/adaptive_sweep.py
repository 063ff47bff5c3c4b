"""``sweep=grid`` against ``sweep=adaptive`` on the offline demo: evaluations, seconds and the
chosen values of every data-free method that sweeps.

    python benchmarks/adaptive_sweep.py [--home DIR] [--out DIR] [--methods a,b,...] [--quick]
                                        [--json PATH]

Runs ``python main.py -m method=<methods> sweep=<grid|adaptive> force=true logger=none`` once
per sweep in the same TASKMERGE_HOME (the demo's checkpoints are fine-tuned first when it has
none), reads each job's ``results.json`` and prints per method: the Val candidates evaluated
(``evaluations.candidates``) and the job's seconds (merge, Val sweep, Test) of both sweeps, the
chosen hyperparameters of both and whether they are the same; then the totals. Consensus'
per-task TALL-mask selection, which runs before its own sweep, is not counted in its
evaluations (it is in its seconds). ``--quick``: three methods (sum, TSVM, pcb).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _report import add_json_flag, write_figures  # benchmarks/_report.py
from machine import machine_line  # benchmarks/machine.py

from taskmerge.merging.registry import data_free_names, method_spec

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ("grid", "adaptive")
QUICK_METHODS = "sum,TSVM,pcb"


def swept_methods() -> list[str]:
    """The data-free methods with a Val sweep (a scaling coefficient or per-task lambdas)."""
    return [
        name
        for name in data_free_names()
        if method_spec(name).scaled or getattr(method_spec(name).cls, "select_per_task", False)
    ]


def run_multirun(home: Path, out: Path, methods: str, sweep: str) -> None:
    """One Hydra multirun over ``methods`` with ``sweep``, its jobs recomputed."""
    env = dict(os.environ, TASKMERGE_HOME=str(home), HF_HUB_OFFLINE="1")
    command = [
        sys.executable, str(ROOT / "main.py"), "-m", f"method={methods}", f"sweep={sweep}",
        "force=true", "logger=none", f"hydra.sweep.dir={out}",
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def read_jobs(out: Path) -> dict[str, dict[str, Any]]:
    """Method -> the results of its job in one multirun folder."""
    jobs = [json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))]
    return {job["method"]: job for job in jobs}


def _chosen(job: dict[str, Any]) -> str:
    values = job.get("hyperparameters") or {}
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items()) or "-"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "/".join(_short(v) for v in value.values())
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def compare(grid: dict[str, dict], adaptive: dict[str, dict], methods: list[str]) -> list[dict]:
    """One row per method: evaluations, seconds and choices of both sweeps."""
    rows = []
    for name in methods:
        g, a = grid[name], adaptive[name]
        rows.append({
            "method": name,
            "grid_evaluations": g["evaluations"]["candidates"],
            "adaptive_evaluations": a["evaluations"]["candidates"],
            "grid_seconds": round(g["seconds"], 1),
            "adaptive_seconds": round(a["seconds"], 1),
            "grid_chosen": _chosen(g),
            "adaptive_chosen": _chosen(a),
            "same": g["hyperparameters"] == a["hyperparameters"],
            "full_grid": a["evaluations"]["full_grid"],
            "note": a["evaluations"]["note"],
        })  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table of :func:`compare`'s rows and a totals line."""
    head = ["method", "evaluations grid", "evaluations adaptive", "seconds grid",
            "seconds adaptive", "chosen grid", "chosen adaptive", "same?",
            "adaptive note"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["grid_evaluations"], r["adaptive_evaluations"], r["grid_seconds"],
                 r["adaptive_seconds"], r["grid_chosen"], r["adaptive_chosen"],
                 "yes" if r["same"] else "NO", r["note"] or ""]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def totals(rows: list[dict]) -> dict[str, Any]:
    """Summed evaluations and seconds of both sweeps, and how many choices agree."""
    return {
        "methods": len(rows),
        "grid_evaluations": sum(r["grid_evaluations"] for r in rows),
        "adaptive_evaluations": sum(r["adaptive_evaluations"] for r in rows),
        "grid_seconds": round(sum(r["grid_seconds"] for r in rows), 1),
        "adaptive_seconds": round(sum(r["adaptive_seconds"] for r in rows), 1),
        "same": sum(r["same"] for r in rows),
    }


def main() -> None:
    """Run both multiruns and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="TASKMERGE_HOME (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="multirun dirs (default: temp)")
    parser.add_argument("--methods", default=None, help="default: every data-free swept method")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_METHODS}")
    add_json_flag(parser)
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    methods = args.methods or (QUICK_METHODS if args.quick else ",".join(swept_methods()))
    work = Path(tempfile.mkdtemp(prefix="taskmerge-adaptive-"))
    home = args.home or work / "home"
    out = args.out or work / "multirun"
    found = {}
    for sweep in SWEEPS:
        run_multirun(home, out / sweep, methods, sweep)
        found[sweep] = read_jobs(out / sweep)
    rows = compare(found["grid"], found["adaptive"], methods.split(","))
    total = totals(rows)
    print(table(rows))
    print(
        f"\ntotal over {total['methods']} methods: {total['grid_evaluations']} -> "
        f"{total['adaptive_evaluations']} Val evaluations, {total['grid_seconds']} -> "
        f"{total['adaptive_seconds']} s; the same choice for {total['same']} of them"
    )
    write_figures(args.json, {"rows": rows, "total": total, "methods": methods})


if __name__ == "__main__":
    main()
