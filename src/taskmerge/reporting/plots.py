"""Every plot: Val curves (one run's ``sweep.png`` and a report's ``val_curves.png``), per-task
bars, fine-tuning modes and disentanglement heatmaps. Figures are built outside pyplot (no
global backend state: safe in notebooks and threads)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmerge.analysis.disentanglement import DisentanglementResult
from taskmerge.experiment.grid_edges import swept_key
from taskmerge.experiment.records import mean_normalized
from taskmerge.io.atomic import save_figure
from taskmerge.reporting.runs import FINETUNED, Report, Row, Table


def _figure(width: float, height: float):  # noqa: ANN202 - a matplotlib Figure
    """A figure outside pyplot (no global backend state: safe in notebooks and threads)."""
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height))


@dataclass
class SweepSeries:
    """One run's Val curve: mean normalized top-1 (%) against its swept hyperparameter, and the
    chosen point; a run with no sweep is a level (its chosen Val value)."""

    label: str
    key: str | None
    points: list[tuple[float, float]]
    chosen: tuple[float, float] | None
    level: float | None


def sweep_series(results: Mapping[str, Any], label: str) -> SweepSeries:
    """The Val curve of one ``results.json``."""
    curve = results.get("sweep") or []
    key = swept_key([c.get("hyperparameters", {}) for c in curve])
    points = sorted(
        (float(c["hyperparameters"][key]), 100 * mean_normalized(c))  # type: ignore[operator]
        for c in curve
        if key
        and isinstance(c["hyperparameters"].get(key), (int, float))
        and mean_normalized(c) is not None
    )
    val = (results.get("val") or {}).get("avg", {}).get("normalized_top1")
    value = (results.get("hyperparameters") or {}).get(key) if key else None
    chosen = (
        (float(value), 100 * val) if isinstance(value, (int, float)) and val is not None else None
    )
    level = 100 * val if val is not None else None
    return SweepSeries(label, key, points, chosen, level)


def draw_val_curves(ax: Any, series: Sequence[SweepSeries], title: str) -> None:
    """Every series on one axis: curves with a star at the chosen point, levels dashed."""
    for index, item in enumerate(series):
        color = _color(index, len(series))
        label = item.label + (f" ({item.key})" if item.key not in (None, "scaling_coef") else "")
        if len(item.points) >= 2:
            xs, ys = zip(*item.points, strict=True)
            ax.plot(xs, ys, marker=".", color=color, label=label)
            if item.chosen is not None:
                ax.plot(*item.chosen, marker="*", markersize=12, color=color)
        elif item.level is not None:
            ax.axhline(item.level, linestyle="--", linewidth=1, color=color, label=label)
    ax.set_title(title)
    ax.set_xlabel("swept hyperparameter (scaling_coef; LiNeS: beta / alpha)")
    ax.set_ylabel("mean normalized top-1 (%)")
    ax.grid(alpha=0.3)


def plot_run_sweep(results: Mapping[str, Any], path: str | Path) -> Path | None:
    """``sweep.png`` of one run: its Val curve and the chosen point (None: nothing swept)."""
    series = sweep_series(results, str(results.get("method", "")))
    if len(series.points) < 2:
        return None
    fig = _figure(6, 3.8)
    draw_val_curves(fig.subplots(), [series], f"{results.get('method')} on Val")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_val_curves(report: Report, path: str | Path) -> Path:
    """Mean normalized Val top-1 against the swept hyperparameter, every run on one figure
    (one panel per setting); the chosen point is a star; unswept runs are dashed levels."""
    fig = _figure(9, 4.2 * len(report.tables))
    axes = fig.subplots(len(report.tables), 1, squeeze=False)[:, 0]
    for ax, table in zip(axes, report.tables, strict=True):
        rows = [row for row in table.rows if row.run is not None]
        series = [sweep_series(row.run.results, _plot_label(row, report)) for row in rows]  # type: ignore[union-attr]
        draw_val_curves(ax, series, f"Val, {table.title}")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


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
    return save_figure(fig, path, dpi=110)


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
    return save_figure(fig, path, dpi=110)


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


def plot_heatmaps(results: Sequence[DisentanglementResult], path: str | Path) -> Path:
    """One heatmap of xi per result, side by side, on one colour scale (PNG)."""
    top = max(float(r.xi.max()) for r in results) or 1.0
    fig = _figure(3.9 * len(results) + 0.8, 3.6)
    axes = fig.subplots(1, len(results), squeeze=False)
    fig.subplots_adjust(wspace=0.45)
    image = None
    for ax, result in zip(axes[0], results, strict=True):
        low, high = result.grid[0], result.grid[-1]
        image = ax.imshow(
            result.xi,
            origin="lower",
            extent=(low, high, low, high),
            vmin=0,
            vmax=top,
            cmap="viridis",
            aspect="equal",
        )
        ax.set_xlabel(f"a2 ({result.tasks[1]})")
        ax.set_ylabel(f"a1 ({result.tasks[0]})")
        ax.set_title(f"{result.label}\nmean xi {result.xi.mean():.3f}", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label="disentanglement error xi")
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_coefficients(learned: Mapping[str, Any], path: str | Path) -> Path:
    """The learned merging coefficients as a task x layer heatmap (AdaMerging; PNG)."""
    values = learned["coefficients"].detach().float().cpu().numpy()
    tasks, layers = list(learned["tasks"]), list(learned["layers"])
    fig = _figure(min(2.0 + 0.12 * len(layers), 24.0), 1.2 + 0.35 * len(tasks))
    ax = fig.subplots()
    image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_xlabel(f"layer (parameter tensor, {len(layers)} in state-dict order)")
    ax.set_title("learned merging coefficients", fontsize=9)
    fig.colorbar(image, ax=ax, label="coefficient")
    return save_figure(fig, path, dpi=120, bbox_inches="tight")
