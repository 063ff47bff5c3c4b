"""``report.py``: paper-style reports of finished merge runs (tables, plots, W&B).

python report.py outputs/main-multirun/2025-01-01/12-00-00       # one multirun
python report.py /tmp/sweep_a /tmp/sweep_b --out report/        # several, into report/
python report.py outputs/main-multirun --wandb                  # also one W&B run per sweep

Reads every ``results.json`` under the directories (recursively; jobs that did not finish are
listed as skipped), writes ``report.md``, ``report.csv``, ``report.tex``, ``val_curves.png``,
``per_task.png`` and, when several fine-tuning modes / evaluation forwards are present,
``modes.png`` into ``--out`` (default: the first directory), and prints the Markdown.
``--wandb`` logs the table (a W&B Table) and the plots to one run per sweep, in the sweep's
group, offline unless ``--wandb-mode online`` (or WANDB_MODE) says otherwise; the runs go to
WANDB_DIR when set, else ``<out>/wandb``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from taskmerge.app.errors import USER_ERROR, OneLineParser, print_user_error
from taskmerge.reporting.files import log_wandb, write_report
from taskmerge.reporting.render import render_markdown
from taskmerge.reporting.runs import build_report, collect_runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = OneLineParser(
        prog="report.py",
        description="Tables, plots and W&B logging of finished taskmerge runs (results.json).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="output directory (default: the first dir)")
    parser.add_argument("--wandb", action="store_true", help="log the report to W&B")
    parser.add_argument("--wandb-project", default="taskmerge")
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument("--wandb-mode", default=None, help="offline (default) | online")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the report; 1 when no complete run was found."""
    args = parse_args(argv)
    try:
        runs, skipped = collect_runs(args.dirs)
    except FileNotFoundError as exc:
        print_user_error(exc, "report.py")
        return USER_ERROR
    report = build_report(runs, skipped)
    out = args.out or args.dirs[0]
    files = write_report(report, out)
    print(render_markdown(report), end="")
    if not runs:
        print_user_error(
            f"no complete results.json under {[str(d) for d in args.dirs]}", "report.py"
        )
        return 1
    if args.wandb:
        groups: dict[str, list] = {}
        for run in runs:
            groups.setdefault(run.group, []).append(run)
        for group, members in groups.items():
            with tempfile.TemporaryDirectory(prefix="taskmerge-report-") as tmp:
                # several sweeps: each gets its own table and plots, in its own group
                sub = report if len(groups) == 1 else build_report(members)
                sub_files = files if len(groups) == 1 else write_report(sub, tmp)
                run_dir = log_wandb(
                    sub,
                    sub_files,
                    group,
                    project=args.wandb_project,
                    mode=args.wandb_mode,
                    entity=args.wandb_entity,
                    directory=None if os.environ.get("WANDB_DIR") else out,
                )
            print(f"W&B run of {group}: {run_dir}", file=sys.stderr)
    print(f"wrote {', '.join(sorted(files))} to {out}", file=sys.stderr)
    return 0
