"""Writing a report: plots, the report folder and the W&B run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmerge.reporting.render import (
    HEAD,
    TAIL,
    _all_tasks,
    _lines,
    render_csv,
    render_latex,
    render_markdown,
)
from taskmerge.reporting.runs import FINETUNED, Report, Row, Table


# --------------------------------------------------------------------------- plots
def _figure(width: float, height: float):  # noqa: ANN202 - a matplotlib Figure
    """A figure outside pyplot (no global backend state: safe in notebooks and threads)."""
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height))


def swept_key(curve: Sequence[Mapping[str, Any]]) -> str | None:
    """The first hyperparameter that varies along a sweep (None: a single point)."""
    if len(curve) < 2:
        return None
    for key in curve[0].get("hyperparameters", {}):
        if len({repr(c["hyperparameters"].get(key)) for c in curve}) > 1:
            return key
    return None


def plot_val_curves(report: Report, path: str | Path) -> Path:
    """Mean normalized Val top-1 against the swept hyperparameter, every run on one figure
    (one panel per setting); the chosen point is a star; unswept runs are dashed levels."""
    fig = _figure(9, 4.2 * len(report.tables))
    axes = fig.subplots(len(report.tables), 1, squeeze=False)[:, 0]
    for ax, table in zip(axes, report.tables, strict=True):
        runs = [row for row in table.rows if row.run is not None]
        for index, row in enumerate(runs):
            color = _color(index, len(runs))
            curve = row.run.results.get("sweep") or []  # type: ignore[union-attr]
            key = swept_key(curve)
            label = _plot_label(row, report) + (
                f" ({key})" if key not in (None, "scaling_coef") else ""
            )
            points = sorted(
                (c["hyperparameters"][key], c["val/avg/normalized_top1"])
                for c in curve
                if key and isinstance(c["hyperparameters"].get(key), (int, float))
            )
            val = (row.run.results.get("val") or {}).get("avg", {}).get("normalized_top1")  # type: ignore[union-attr]
            if len(points) >= 2:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, [100 * y for y in ys], marker=".", color=color, label=label)
                chosen = (row.run.results.get("hyperparameters") or {}).get(key)  # type: ignore[union-attr]
                if isinstance(chosen, (int, float)) and val is not None:
                    ax.plot([chosen], [100 * val], marker="*", markersize=12, color=color)
            elif val is not None:
                ax.axhline(100 * val, linestyle="--", linewidth=1, color=color, label=label)
        ax.set_title(f"Val, {table.title}")
        ax.set_xlabel("swept hyperparameter (scaling_coef; LiNeS: beta / alpha)")
        ax.set_ylabel("mean normalized top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_per_task(report: Report, path: str | Path) -> Path:
    """Test top-1 per task (and the mean) of every row: grouped bars, one panel per setting."""
    fig = _figure(
        max(9, 1.3 * max(len(t.tasks) + 1 for t in report.tables)), 4.2 * len(report.tables)
    )
    axes = fig.subplots(len(report.tables), 1, squeeze=False)[:, 0]
    for ax, table in zip(axes, report.tables, strict=True):
        groups = [*table.tasks, "mean"]
        width = 0.85 / max(1, len(table.rows))
        for index, row in enumerate(table.rows):
            values = [row.test.get(t) for t in table.tasks] + [row.mean_abs]
            xs = [g + (index - (len(table.rows) - 1) / 2) * width for g in range(len(groups))]
            ys = [100 * v if v is not None else 0.0 for v in values]
            color = "black" if row.method == FINETUNED else _color(index, len(table.rows))
            ax.bar(xs, ys, width, color=color, label=_plot_label(row, report))
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_ylabel("Test top-1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"Test, {table.title}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_modes(report: Report, path: str | Path) -> Path | None:
    """Mean Test top-1, absolute and normalized, of each method in each fine-tuning mode
    (grouped bars); None (nothing written) when the runs have a single mode."""
    modes = report.modes
    if len(modes) < 2:
        return None
    rows = [
        (_method_label(row, table, report), row) for table in report.tables for row in table.rows
    ]
    methods: list[str] = []
    for name, _ in rows:
        if name not in methods:
            methods.append(name)
    fig = _figure(max(9, 0.9 * len(methods) * len(modes) ** 0.5), 7)
    axes = fig.subplots(2, 1)
    width = 0.85 / len(modes)
    for ax, attr, what in ((axes[0], "mean_abs", "absolute"), (axes[1], "mean_norm", "normalized")):
        for index, mode in enumerate(modes):
            values = {}
            for name, row in rows:
                if row.mode == mode and getattr(row, attr) is not None:
                    values.setdefault(name, 100 * getattr(row, attr))
            xs = [m + (index - (len(modes) - 1) / 2) * width for m in range(len(methods))]
            ax.bar(
                xs,
                [values.get(m, 0.0) for m in methods],
                width,
                label=mode,
                color=_color(index, len(modes)),
            )
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel(f"mean Test top-1, {what} (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(
            fontsize=8,
            title="fine-tuning\n(@forward)",
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
        )
    axes[0].set_title("Fine-tuning modes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def _method_label(row: Row, table: Table, report: Report) -> str:
    label = row.label + (" + LiNeS" if row.lines else "")
    return f"{label} [{table.model}, {len(table.tasks)} tasks]" if len(report.tables) > 1 else label


def _plot_label(row: Row, report: Report) -> str:
    label = row.label + (" + LiNeS" if row.lines else "")
    return f"{label}, {row.mode}" if len(report.modes) > 1 else label


def _color(index: int, count: int) -> Any:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if count > 10 else "tab10"]
    return cmap(index % cmap.N)


# --------------------------------------------------------------------------- output
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
        (out / name).write_text(text)
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

    from taskmerge.tracking import WandbTracker

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
