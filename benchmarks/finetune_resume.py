"""What a SIGKILL during fine-tuning costs: the extra time of kill + rerun against the bound
"one save interval plus start-up".

    python benchmarks/finetune_resume.py [--task Digits] [--epochs-scale 3] [--save-every 20]

The real command, ``finetune.py DATASETS=[task] train.save_every=N`` on the offline demo; a first
run fills the caches (demo data, zero-shot heads) that every measured home then starts with:
* uninterrupted: wall time, training steps and training seconds (metrics.json);
* start-up: the same command once the checkpoint exists (imports, config, model, data; it
  exits before training);
* killed: the command with SIGKILL sent just before a save is due (``--kill-at`` of the save
  interval after a save was seen, past half the run: the worst case loses nearly one
  interval), then the same command again, which resumes from the last save.
Prints the extra time (killed run + rerun - uninterrupted) against the bound, the steps
redone, and whether the resumed weights equal the uninterrupted ones bitwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import machine_line  # benchmarks/machine.py
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def command(task: str, epochs_scale: float, save_every: int, home: Path) -> list[str]:
    """The finetune.py command line of every run (the Hydra run directory in ``home``)."""
    return [sys.executable, str(ROOT / "finetune.py"), f"DATASETS=[{task}]",
            f"train.epochs_scale={epochs_scale}", f"train.save_every={save_every}",
            f"hydra.run.dir={home / 'run'}"]  # fmt: skip


def environment(home: Path) -> dict[str, str]:
    """The runs' environment: their own home, offline."""
    return dict(os.environ, TASKMERGE_HOME=str(home), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")


def timed_run(args: list[str], home: Path) -> tuple[float, str]:
    """Wall seconds and output (stdout and stderr) of one complete run (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(args, env=environment(home), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"run failed:\n{done.stdout[-3000:]}")
    return time.perf_counter() - start, done.stdout


def task_dir(home: Path, task: str) -> Path:
    return home / "checkpoints" / "taskmerge-tiny" / "standard" / task


def killed_run(args: list[str], home: Path, task: str, steps: int, save_every: int,
               wait: float) -> tuple[float, int]:  # fmt: skip
    """Run until a save past half the run, wait ``wait`` s, SIGKILL; wall seconds, saved step."""
    state = task_dir(home, task) / "training-state.pt"
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=environment(home), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    seen = None
    while proc.poll() is None:
        if state.is_file() and state.stat().st_mtime_ns != seen:
            seen = state.stat().st_mtime_ns
            try:
                step = int(torch.load(state, weights_only=True)["step"])
            except Exception:  # noqa: BLE001 - replaced while reading: look again
                continue
            if step >= steps // 2 and step + save_every < steps:
                time.sleep(wait)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return time.perf_counter() - start, step
        time.sleep(0.01)
    raise SystemExit("the run finished before it could be killed: raise --epochs-scale")


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Digits")
    parser.add_argument("--epochs-scale", type=float, default=3.0)
    parser.add_argument("--save-every", type=int, default=20)
    parser.add_argument("--kill-at", type=float, default=0.9,
                        help="seconds after a save, as a fraction of the interval")  # fmt: skip
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    work = Path(tempfile.mkdtemp(prefix="taskmerge-resume-"))
    warm_home, straight_home, killed_home = work / "warm", work / "straight", work / "killed"
    timed_run(command(args.task, args.epochs_scale, args.save_every, warm_home), warm_home)
    for home in (straight_home, killed_home):  # the same warm caches (data, heads), no checkpoint
        shutil.copytree(warm_home / "cache", home / "cache")
    run = command(args.task, args.epochs_scale, args.save_every, straight_home)
    uninterrupted, _ = timed_run(run, straight_home)
    metrics = json.loads((task_dir(straight_home, args.task) / "metrics.json").read_text())
    steps, train_seconds = int(metrics["train_steps"]), float(metrics["train_seconds"])
    step_time = train_seconds / steps
    interval = args.save_every * step_time
    startup, _ = timed_run(run, straight_home)  # the checkpoint exists: start-up only
    run = command(args.task, args.epochs_scale, args.save_every, killed_home)
    before_kill, saved_step = killed_run(
        run, killed_home, args.task, steps, args.save_every, args.kill_at * interval
    )
    rerun, log = timed_run(run, killed_home)
    resumed = int(log.split("resumed at step")[1].split()[0]) if "resumed at step" in log else 0
    extra = before_kill + rerun - uninterrupted
    bound = interval + startup
    a = load_file(str(task_dir(straight_home, args.task) / "finetuned.safetensors"))
    b = load_file(str(task_dir(killed_home, args.task) / "finetuned.safetensors"))
    bitwise = all(torch.equal(a[k], b[k]) for k in a)
    print(f"demo task {args.task}: {steps} steps of {step_time:.3f} s, a save every "
          f"{args.save_every} steps ({interval:.1f} s)")  # fmt: skip
    print("| run | wall s |\n|---|---|")
    print(f"| uninterrupted | {uninterrupted:.1f} |")
    print(f"| start-up (command with the checkpoint present) | {startup:.1f} |")
    print(f"| killed {args.kill_at:.0%} of an interval after the save of step {saved_step} | "
          f"{before_kill:.1f} |")  # fmt: skip
    print(f"| rerun, resumed at step {resumed} | {rerun:.1f} |")
    print(f"extra time of the kill: {extra:.1f} s; bound (one interval + start-up): {bound:.1f} s"
          f" -> {'within' if extra <= bound else 'OVER'} the bound")  # fmt: skip
    print(f"resumed weights equal the uninterrupted ones bitwise: {bitwise}")


if __name__ == "__main__":
    main()
