"""Writing a report: the report folder (tables and plots) and its W&B run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskmerge.io.atomic import write_text
from taskmerge.reporting.plots import plot_modes, plot_per_task, plot_val_curves
from taskmerge.reporting.render import (
    HEAD,
    TAIL,
    _all_tasks,
    _lines,
    render_csv,
    render_latex,
    render_markdown,
)
from taskmerge.reporting.runs import Report, Row, Table


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv``, ``report.tex``, ``val_curves.png``,
    ``per_task.png`` and (several modes) ``modes.png`` into ``out``; name -> path."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, text in (
        ("report.md", render_markdown(report)),
        ("report.csv", render_csv(report)),
        ("report.tex", render_latex(report)),
    ):
        write_text(text, out / name)
        files[name] = out / name
    if report.tables:
        files["val_curves.png"] = plot_val_curves(report, out / "val_curves.png")
        files["per_task.png"] = plot_per_task(report, out / "per_task.png")
        modes = plot_modes(report, out / "modes.png")
        if modes is not None:
            files["modes.png"] = modes
    return files


def wandb_table_data(report: Report) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the W&B Table: the setting, then the cells (numbers as floats,
    None where there is none), and the full source."""
    columns = ["setting", *HEAD, *_all_tasks(report), *TAIL[:-1], "source"]
    data = []
    for table, row, cells in _lines(report):
        cells = {key: _number(value) for key, value in cells.items()}
        cells |= {"setting": table.title, "LiNeS": row.lines, "chosen": cells["chosen"]}
        cells["source"] = row.published.source if row.published else ""
        data.append([cells.get(column) for column in columns])
    return columns, data


def _number(text: str) -> Any:
    if text == "-":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def log_wandb(
    report: Report,
    files: Mapping[str, Path],
    group: str,
    project: str = "taskmerge",
    mode: str | None = None,
    entity: str | None = None,
    directory: str | Path | None = None,
    name: str | None = None,
) -> Path:
    """Log the table (a ``wandb.Table``) and the plots to one W&B run in ``group`` (the sweep's
    runs' group), offline unless ``mode`` (or ``WANDB_MODE``) says otherwise; returns the run's
    local directory (``wandb sync`` it to upload an offline run)."""
    import wandb

    from taskmerge.reporting.tracking import WandbTracker

    tracker = WandbTracker(
        project=project,
        mode=mode or os.environ.get("WANDB_MODE") or "offline",
        entity=entity,
        group=group,
        name=name or f"report-{group}".replace("/", "-"),
        tags=["report"],
        dir=str(directory) if directory else os.environ.get("WANDB_DIR"),
        run_config={"runs": [str(run.path) for run in report.runs]},
    )
    try:
        run_dir = Path(tracker.run.dir).parent
        columns, data = wandb_table_data(report)
        tracker.run.log({"report/table": wandb.Table(columns=columns, data=data)})
        for key, path in files.items():
            if key.endswith(".png"):
                tracker.log_image(f"report/{key.removesuffix('.png')}", path)
        tracker.summary(
            {
                _summary_key(table, row): row.mean_abs
                for table in report.tables
                for row in table.rows
            }
        )
    finally:
        tracker.finish()
    return run_dir


def _summary_key(table: Table, row: Row) -> str:
    lines = "+lines" if row.lines else ""
    return (
        f"report/{table.model}/{len(table.tasks)}tasks/{row.label}{lines}/{row.mode}/test_avg_top1"
    )
