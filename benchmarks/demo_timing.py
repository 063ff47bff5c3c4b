"""Time the offline demo cold and warm, and measure how much of the gap task arithmetic closes.

    python benchmarks/demo_timing.py [--keep DIR]

Cold: a fresh TASKMERGE_HOME (no data, heads or checkpoints cached; the shipped tiny weights are
unpacked), i.e. generation + 8 fine-tunings + merge + Val sweep + Test. Warm: the same command
again with ``force=true``, data, heads and checkpoints cached, the merge and sweep recomputed.
Rerun: the same command as the cold one, its complete results reused. Then `method=zeroshot`
(warm) gives the zero-shot baseline. Prints the
timings and, on Test, zero-shot / fine-tuned / task-arithmetic accuracy per task and the fraction
of the gap between zero-shot and fine-tuned normalized accuracy that task arithmetic closes.
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


def run_main(home: Path, run_dir: Path, *overrides: str) -> tuple[float, dict]:
    """Run main.py once; returns (wall seconds, results JSON)."""
    env = dict(os.environ, TASKMERGE_HOME=str(home), WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "main.py"), f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    return seconds, json.loads((run_dir / "results.json").read_text())


def main() -> None:
    """Cold run, warm run, zero-shot run; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="work dir to keep (default: temp)")
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    work = args.keep or Path(tempfile.mkdtemp(prefix="taskmerge-bench-"))
    home = work / "home"
    cold_s, cold = run_main(home, work / "cold")
    warm_s, warm = run_main(home, work / "warm", "force=true")
    rerun_s, _ = run_main(home, work / "rerun")
    _, zeroshot = run_main(home, work / "zeroshot", "method=zeroshot")

    print(f"cold demo (nothing cached): {cold_s:7.1f} s   target < 300 s")
    print(f"warm demo (cached):         {warm_s:7.1f} s   target < 60 s")
    print(f"warm / cold ratio:          {warm_s / cold_s:7.3f}")
    print(f"rerun (results reused):     {rerun_s:7.1f} s")
    print()
    print(f"{'task':<10} {'zero-shot':>9} {'fine-tuned':>10} {'task arith':>10}")
    for task in warm["tasks"]:
        zs, ta = zeroshot["test"][task], warm["test"][task]
        print(f"{task:<10} {zs['top1']:9.3f} {zs['finetuned_top1']:10.3f} {ta['top1']:10.3f}")
    zs_norm = zeroshot["test"]["avg"]["normalized_top1"]
    ta_norm = warm["test"]["avg"]["normalized_top1"]
    print()
    print(
        f"Test mean normalized: zero-shot {zs_norm:.3f}  task arithmetic {ta_norm:.3f}  "
        f"(alpha={warm['hyperparameters']['scaling_coef']})  fine-tuned 1.000"
    )
    print(
        f"gap closed by task arithmetic: {(ta_norm - zs_norm) / (1 - zs_norm):.1%}"
        "   target >= 40% (ViT-B-32 8 tasks: 49%)"
    )
    same = cold["test"] == warm["test"]
    print(f"cold and warm results identical: {same}")


if __name__ == "__main__":
    main()
