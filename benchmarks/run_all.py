"""Rerun the benchmark scripts and write one table of their figures, the one the docs point to.

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--home DIR] [--timeout S]
                                 [--out DIR]

Runs each script of :data:`SCRIPTS` (``--quick``: with its small sizes; a script without small
sizes that would take too long is recorded as skipped, with the reason) in a subprocess, one at
a time, and writes ``<out>/latest.md`` and ``<out>/latest.json`` (default ``benchmarks/results``):
the machine (CPU, usable cores, load average before and after, GPU), the versions (python,
torch, open_clip, taskmerge's commit), the date, and per script its command, seconds, exit
status and figures: what it wrote with ``--json`` where it has that flag
(:mod:`_report`), and the Markdown tables and lines it printed. A script that fails or runs past
``--timeout`` is recorded as such, and the runner then exits with status 1. ``--only`` reruns
the named scripts and keeps the other scripts' entries of an existing ``latest.json``.
The demo benchmarks share one TASKMERGE_HOME (``--home``; default: a temporary one), so the
demo checkpoints are fine-tuned once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import cpu_model, machine_line  # benchmarks/machine.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The printed output kept per script (its last characters).
TAIL = 4000


@dataclass(frozen=True)
class Script:
    """One benchmark script and how the runner calls it.

    Attributes:
        name: The file's name without ``.py``.
        args: Its arguments for a full run.
        quick: Its arguments with small sizes (``--quick``).
        home: It takes ``--home DIR`` (a demo benchmark sharing the runner's TASKMERGE_HOME).
        writes_json: It takes ``--json PATH`` (:mod:`_report`).
        skip_quick: Why ``--quick`` skips it (no small size, too slow), or None.
    """

    name: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    home: bool = False
    writes_json: bool = False
    skip_quick: str | None = None


#: Every benchmark, in the order they run (the demo ones after the first share its checkpoints).
SCRIPTS: tuple[Script, ...] = (
    Script("adaptive_sweep", quick=("--quick",), home=True, writes_json=True),
    Script("demo_methods_table", home=True,
           quick=("--methods", "zeroshot,sum,ties,tall_mask,TSVM,TSVC,iso_cts,negation")),
    Script("resume_timing", quick=("--methods", "sum,ties,TSVM,iso_c"), home=True),
    Script("demo_modes_table", quick=("--quick",), home=True),
    Script("demo_timing"),  # no small size: a cold demo (8 fine-tunings) and warm runs, minutes
    Script("finetune_resume", quick=("--epochs-scale", "1", "--save-every", "10")),
    Script("train_throughput", quick=("--images", "16", "--batch", "4", "--steps", "2",
                                      "--rounds", "1"), writes_json=True),
    Script("eval_throughput", quick=("--images", "32", "--batch", "16", "--rounds", "1"),
           writes_json=True),
    Script("finetune_modes", quick=("--models", "tiny", "--steps", "2", "--rounds", "1")),
    Script("linear_sweep", quick=("--models", "tiny", "--points", "5", "--repeats", "1")),
    Script("tsv_accuracy", quick=("--tasks", "2",)),
    Script("svd_speed", quick=("--part", "b32", "--spectrum", "lowrank")),
    Script("import_memory", quick=("--quick", "--tasks", "2")),
    Script("merge_memory", quick=("--quick", "--tasks", "2", "4", "--methods", "TA", "TIES")),
    Script("adamerging_memory", quick=("--tasks", "2", "4", "--steps", "1")),
)  # fmt: skip


@dataclass
class Outcome:
    """What one script's run gave (an entry of ``latest.json``)."""

    name: str
    command: list[str]
    status: str  # ok | failed | timeout | skipped
    quick: bool = False
    seconds: float = 0.0
    returncode: int | None = None
    reason: str | None = None
    date: str = ""
    figures: Any = None
    tables: list[list[dict[str, str]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    output_tail: str = ""


def command_of(script: Script, folder: Path, quick: bool, home: Path, out: Path) -> list[str]:
    """The command line that runs ``script`` (its figures' JSON, when it writes one, to
    ``out``)."""
    command = [sys.executable, str(folder / f"{script.name}.py")]
    command += list(script.quick if quick else script.args)
    if script.home:
        command += ["--home", str(home)]
    if script.writes_json:
        command += ["--json", str(out)]
    return command


def run_script(
    script: Script, folder: Path, quick: bool, home: Path, timeout: float, work: Path
) -> Outcome:
    """Run one script (its process group killed past ``timeout``) and collect its figures."""
    quick = quick and bool(script.quick or script.skip_quick)  # a script without small sizes
    figures_path = work / f"{script.name}.json"
    command = command_of(script, folder, quick, home, figures_path)
    if quick and script.skip_quick:
        return Outcome(script.name, command, "skipped", quick, reason=script.skip_quick)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline",
               TQDM_DISABLE="1")  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
        status = "ok" if process.returncode == 0 else "failed"
        reason = None if status == "ok" else f"exit status {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the script and every process it started
        output, _ = process.communicate()
        status, reason = "timeout", f"ran past --timeout {timeout:g} s: killed"
    seconds = round(time.perf_counter() - start, 1)
    printed = _printed(output or "")
    figures = None
    if figures_path.exists():
        figures = json.loads(figures_path.read_text()).get("figures")
    return Outcome(
        script.name, command, status, quick, seconds, process.returncode, reason, _now(), figures,
        markdown_tables(printed), figure_lines(printed), printed[-TAIL:],
    )  # fmt: skip


#: A tqdm progress bar as it prints ("12%|█▎  | 1/8 [00:00<00:05, 1.3task/s]").
BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\d+/\d+ \[[\d:<?]+")


def _printed(output: str) -> str:
    """The output without progress bars (carriage-return redraws) and log records."""
    kept = []
    for line in output.split("\n"):
        line = line.rsplit("\r", 1)[-1].rstrip()
        if line and not line.startswith("[20") and not BAR.search(line):  # [2026-...]: logs
            kept.append(line)
    return "\n".join(kept)


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``text``: a list of rows, each header -> cell."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2:
            head = _unique(block[0])
            rows = [r for r in block[1:] if not set("".join(r)) <= set("-: ")]
            tables.append([dict(zip(head, row, strict=False)) for row in rows])
        block = []
    return tables


def _unique(head: list[str]) -> list[str]:
    """Column names made unique (a repeated one gets its column number)."""
    return [name if head.index(name) == i else f"{name} ({i + 1})" for i, name in enumerate(head)]


def figure_lines(text: str) -> list[str]:
    """The printed lines that are not tables nor the machine line (sentences with figures)."""
    return [
        line
        for line in text.splitlines()
        if not line.startswith("|") and not line.startswith("benchmark machine:") and line.strip()
        and any(ch.isdigit() for ch in line)
    ]  # fmt: skip


def environment(load_before: float | None) -> dict[str, Any]:
    """The machine and versions the figures come from."""
    import torch

    versions: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import open_clip

        versions["open_clip"] = open_clip.__version__
    except ImportError:  # pragma: no cover - part of the pinned stack
        versions["open_clip"] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    versions["taskmerge_commit"] = commit or None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": _now(),
        "machine": machine_line(),
        "cpu": cpu_model(),
        "cpu_count": cores,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_before": load_before,
        "load_average_after": _load(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": versions,
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def render(document: dict[str, Any]) -> str:
    """``latest.md``: the environment, a summary table, then each script's figures."""
    env, outcomes = document["environment"], document["scripts"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        "# Benchmark figures",
        "",
        "Written by `python benchmarks/run_all.py` (`--quick`: small sizes; `--only NAME`: some"
        " scripts rerun, the others kept); do not edit by hand. Each section names the command"
        " that printed it, its date, and whether it ran at its full or its small sizes.",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['cpu']}, {env['cpu_count']} usable cores, GPU: {env['gpu'] or 'none'}",
        f"- load average: {env['load_average_before']} before, {env['load_average_after']} after"
        f" (OMP_NUM_THREADS={env['omp_num_threads']})",
        f"- versions: {versions}",
        "",
        "| script | sizes | status | seconds | note |",
        "|---|---|---|---|---|",
    ]
    for item in outcomes:
        sizes = "small (--quick)" if item["quick"] else "full"
        lines.append(
            f"| [{item['name']}](#{item['name']}) | {sizes} | "
            f"{item['status']} | {item['seconds']} | {item['reason'] or ''} |"
        )
    for item in outcomes:
        lines += ["", f"## {item['name']}", "", f"`{_shown(item['command'])}`: {item['status']}"
                  + (f" ({item['reason']})" if item["reason"] else "")
                  + f", {item['seconds']} s" + (f", {item['date']}" if item["date"] else ""),
                  ""]  # fmt: skip
        for table in _figure_tables(item["figures"]) or item["tables"]:
            lines += [*_table(table), ""]
        lines += [f"- {line.removeprefix('- ')}" for line in item["lines"]
                  if not BAR.search(line) and "Warning:" not in line]  # fmt: skip
        if item["status"] in ("failed", "timeout"):
            lines += ["", "```", item["output_tail"][-1500:], "```"]
    return "\n".join(lines).rstrip() + "\n"


def _figure_tables(figures: Any) -> list[list[dict[str, Any]]]:
    """The tables of a script's ``--json`` figures: each list of rows, then the other values as
    one name -> value table (none without ``--json``)."""
    if not isinstance(figures, dict):
        return []

    def rows(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and isinstance(value[0], dict)

    tables = [v for v in figures.values() if rows(v)]
    rest = [{"figure": k, "value": json.dumps(v) if isinstance(v, dict) else str(v)}
            for k, v in figures.items() if not rows(v)]  # fmt: skip
    return [*tables, rest] if rest else tables


def _shown(command: Sequence[str]) -> str:
    """A command as a user types it (python, paths relative to the repository)."""
    parts = ["python"]
    for part in command[1:]:
        path = Path(part)
        parts.append(str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT)
                     else ("DIR" if path.is_absolute() else part))  # fmt: skip
    return " ".join(parts)


def _table(rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    head = list(rows[0])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(row.get(h, "")) for h in head) + " |" for row in rows]
    return out


def run_all(
    scripts: Sequence[Script], folder: Path, out: Path, quick: bool, home: Path, timeout: float,
    keep: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:  # fmt: skip
    """Run ``scripts`` from ``folder``, write ``out/latest.md`` and ``out/latest.json``; the
    entries of ``keep`` (an earlier document's) stay, those rerun replaced in their place."""
    load_before = _load()
    work = Path(tempfile.mkdtemp(prefix="taskmerge-bench-"))
    fresh = {}
    for script in scripts:
        print(f"run_all: {script.name} ...", flush=True)
        outcome = run_script(script, folder, quick, home, timeout, work)
        print(f"run_all: {script.name}: {outcome.status}, {outcome.seconds} s", flush=True)
        fresh[script.name] = outcome.__dict__
    merged = [fresh.pop(item["name"], item) for item in keep]  # rerun entries in their place
    document = {
        "quick": quick,
        "environment": environment(load_before),
        "scripts": [*merged, *fresh.values()],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    (out / "latest.md").write_text(render(document))
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run, print where the table is; 1 if any script failed or timed out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=None,
        help="run only these (the others' entries of latest.json are kept)",
    )
    parser.add_argument("--home", type=Path, default=None, help="TASKMERGE_HOME of the demo runs")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per script")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--render", action="store_true", help="only rewrite latest.md from .json")
    args = parser.parse_args(argv)
    if args.render:
        document = json.loads((args.out / "latest.json").read_text())
        (args.out / "latest.md").write_text(render(document))
        return 0
    names = [s.name for s in SCRIPTS]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(names)}")
    chosen = [s for s in SCRIPTS if args.only is None or s.name in args.only]
    keep: list[dict[str, Any]] = []
    if args.only and (args.out / "latest.json").exists():
        keep = json.loads((args.out / "latest.json").read_text())["scripts"]
    home = args.home or Path(tempfile.mkdtemp(prefix="taskmerge-bench-home-"))
    document = run_all(chosen, HERE, args.out, args.quick, home, args.timeout, keep)
    bad = [s["name"] for s in document["scripts"] if s["status"] in ("failed", "timeout")]
    print(f"run_all: {args.out / 'latest.md'}" + (f"; failed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
