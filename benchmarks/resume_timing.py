"""Rerunning and resuming a multirun: time against an uninterrupted run, results compared.

    python benchmarks/resume_timing.py --home DIR [--methods a,b,...]

With the demo checkpoints in ``--home`` (fine-tuned on first use), one Hydra multirun over the
methods (default: the 12 of the reference repos) is run
1. from an empty results store: the uninterrupted run;
2. again, unchanged: every job finds its complete results and reuses them;
3. from an empty results store again, killed (SIGKILL to the whole process group) once half of
   its jobs have written results, then run again: only the missing jobs run.
Prints the times and ratios (targets: rerun < 15% of the first run; killed + rerun <= 1.2x) and
whether the results of every job equal the uninterrupted run's (Test metrics and Val sweeps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_line  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("zeroshot,single_task,sum,average,ties,mag_masking,tall_mask,consensus,negation,"
           "TSVM,TSVM_2,TSVC")  # fmt: skip


def command(methods: str, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), "-m", f"method={methods}", "logger=none",
            f"hydra.sweep.dir={out}"]  # fmt: skip


def run(methods: str, home: Path, out: Path, kill_after: int | None = None) -> float:
    """Run the multirun; with ``kill_after``, SIGKILL it once that many jobs have results."""
    env = dict(os.environ, TASKMERGE_HOME=str(home), HF_HUB_OFFLINE="1")
    start = time.time()
    proc = subprocess.Popen(command(methods, out), env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while proc.poll() is None:
        if kill_after is not None and len(list(out.glob("*/results.json"))) >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.2)
    if kill_after is None and proc.returncode != 0:
        raise SystemExit(f"multirun failed ({proc.returncode})")
    return time.time() - start


def results(out: Path) -> dict[str, dict]:
    found = {}
    for path in out.glob("*/results.json"):
        data = json.loads(path.read_text())
        found[data["method"]] = data
    return found


def same(a: dict, b: dict) -> bool:
    return (
        a["test"] == b["test"]
        and a["sweep"] == b["sweep"]
        and a["hyperparameters"] == b["hyperparameters"]
    )


def main() -> None:
    """Run the three scenarios and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/taskmerge-resume"))
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    jobs = len(args.methods.split(","))
    store = args.home / "cache" / "results"
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    first = run(args.methods, args.home, args.out / "first")
    rerun = run(args.methods, args.home, args.out / "rerun")
    shutil.rmtree(store, ignore_errors=True)
    killed = run(args.methods, args.home, args.out / "killed", kill_after=jobs // 2)
    done_before_kill = len(list((args.out / "killed").glob("*/results.json")))
    resumed = run(args.methods, args.home, args.out / "resumed")
    base = results(args.out / "first")
    equal_rerun = all(same(base[m], r) for m, r in results(args.out / "rerun").items())
    equal_resumed = all(same(base[m], r) for m, r in results(args.out / "resumed").items())
    reused = sum("reused" in r for r in results(args.out / "resumed").values())
    print(f"{jobs}-job multirun on the demo ({args.methods})")
    print(f"- uninterrupted: {first:.0f} s")
    print(f"- rerun of the finished multirun: {rerun:.0f} s = {100 * rerun / first:.1f}% "
          f"(target < 15%); results identical: {equal_rerun}")  # fmt: skip
    print(f"- killed after {done_before_kill} jobs at {killed:.0f} s, rerun {resumed:.0f} s "
          f"({reused} jobs reused): total {killed + resumed:.0f} s = "
          f"{(killed + resumed) / first:.2f}x (target <= 1.2x); results identical: "
          f"{equal_resumed}")  # fmt: skip


if __name__ == "__main__":
    main()
