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


@dataclass
class RunSweep:
    """What one run's ``sweep.png`` draws: the mean curve and its chosen point, the zero-shot
    and fine-tuned levels on the same (normalized) scale, each task's own Val top-1 curve with
    its zero-shot and fine-tuned levels, and the grid-edge finding."""

    method: str
    series: SweepSeries
    zeroshot: float | None  # mean normalized zero-shot Val top-1 (%)
    finetuned: float  # the fine-tuned level of the normalized scale (%): 100 by definition
    per_task: dict[str, list[tuple[float, float]]]  # task -> (value, Val top-1 %)
    task_zeroshot: dict[str, float]  # task -> zero-shot Val top-1 (%)
    task_finetuned: dict[str, float]  # task -> fine-tuned Val top-1 (%)
    edge: dict[str, Any] | None


def run_sweep(results: Mapping[str, Any]) -> RunSweep:
    """The data of ``sweep.png`` from one ``results.json``."""
    method = str(results.get("method", ""))
    series = sweep_series(results, method)
    tasks = list(results.get("tasks") or [])
    finetuned = {t: v["val_top1"] for t, v in (results.get("finetuned") or {}).items()}
    zeroshot = {t: v["val_top1"] for t, v in (results.get("zeroshot") or {}).items()}
    level = None
    if tasks and all(t in zeroshot and finetuned.get(t) for t in tasks):
        level = 100 * sum(zeroshot[t] / finetuned[t] for t in tasks) / len(tasks)
    per_task: dict[str, list[tuple[float, float]]] = {}
    key = series.key
    for task in tasks:
        points = [
            (float(c["hyperparameters"][key]), 100 * c[f"val/{task}/top1"])
            for c in results.get("sweep") or []
            if key
            and isinstance(c["hyperparameters"].get(key), (int, float))
            and f"val/{task}/top1" in c
        ]
        per_task[task] = sorted(points)
    return RunSweep(
        method,
        series,
        level,
        100.0,
        per_task,
        {t: 100 * zeroshot[t] for t in tasks if t in zeroshot},
        {t: 100 * finetuned[t] for t in tasks if t in finetuned},
        results.get("grid_edge"),
    )


def _chosen_text(data: RunSweep) -> str:
    assert data.series.chosen is not None
    value, level = data.series.chosen
    return f"chosen {data.series.key}={value:g}: {level:.1f}%"


def sweep_figure(results: Mapping[str, Any]):  # noqa: ANN201 - a matplotlib Figure, or None
    """The figure of ``sweep.png`` (None: nothing swept): the mean normalized Val curve with
    the chosen point marked and labelled, zero-shot and fine-tuned reference lines and a
    grid-edge warning; beside it one small panel per task (its Val top-1, zero-shot and
    fine-tuned levels, the chosen value)."""
    from matplotlib.lines import Line2D

    data = run_sweep(results)
    series = data.series
    if len(series.points) < 2:
        return None
    tasks = list(data.per_task)
    columns = min(4, max(1, len(tasks)))
    rows = max(1, -(-len(tasks) // columns))
    fig = _figure(6.2 + 2.3 * columns, max(4.2, 2.1 * rows))
    grid = fig.add_gridspec(rows, 2 + columns, width_ratios=[2.6, 0.05] + [1.0] * columns)
    ax = fig.add_subplot(grid[:, 0])
    xs, ys = zip(*series.points, strict=True)
    ax.plot(xs, ys, marker=".", color="C0", label="merged (mean over tasks)")
    ax.axhline(data.finetuned, color="black", linestyle="--", linewidth=1,
               label=f"fine-tuned ({data.finetuned:.0f}%)")  # fmt: skip
    if data.zeroshot is not None:
        ax.axhline(data.zeroshot, color="gray", linestyle=":", linewidth=1.5,
                   label=f"zero-shot ({data.zeroshot:.1f}%)")  # fmt: skip
    if series.chosen is not None:
        ax.plot(*series.chosen, marker="*", markersize=14, color="C3", linestyle="none",
                label=_chosen_text(data))  # fmt: skip
        ax.annotate(f"{series.chosen[1]:.1f}%", series.chosen, textcoords="offset points",
                    xytext=(0, 9), ha="center", color="C3", fontsize=9)  # fmt: skip
    title = f"{data.method}: Val, mean over {len(tasks)} tasks"
    if data.edge:
        edge = data.edge
        title += f"\nchosen {edge['key']}={edge['value']:g} is the grid's {edge['edge']} edge"
        # below the axis: the note hides no point
        note = f"grid edge: the optimum may lie beyond it; rerun with {edge['override']}"
        ax.text(0.0, -0.2, note, transform=ax.transAxes, fontsize=7, color="C3", va="top",
                bbox={"facecolor": "white", "edgecolor": "C3"})  # fmt: skip
    ax.set_title(title, fontsize=10, color="C3" if data.edge else "black")
    ax.set_xlabel(series.key or "")
    ax.set_ylabel("mean normalized Val top-1 (% of fine-tuned)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    chosen_x = series.chosen[0] if series.chosen is not None else None
    for index, task in enumerate(tasks):
        panel = fig.add_subplot(grid[index // columns, 2 + index % columns])
        points = data.per_task[task]
        if points:
            px, py = zip(*points, strict=True)
            panel.plot(px, py, marker=".", color="C0", linewidth=1)
        if task in data.task_finetuned:
            panel.axhline(data.task_finetuned[task], color="black", linestyle="--", linewidth=0.8)
        if task in data.task_zeroshot:
            panel.axhline(data.task_zeroshot[task], color="gray", linestyle=":", linewidth=1.2)
        if chosen_x is not None:
            panel.axvline(chosen_x, color="C3", linewidth=0.8, alpha=0.7)
        if index == 0:
            panel.legend(
                handles=[
                    Line2D([], [], color="C0", marker=".", label="merged"),
                    Line2D([], [], color="black", linestyle="--", label="fine-tuned"),
                    Line2D([], [], color="gray", linestyle=":", label="zero-shot"),
                    Line2D([], [], color="C3", label="chosen"),
                ],
                fontsize=5,
                loc="best",
            )
        panel.set_title(task, fontsize=8)
        panel.set_xlabel(series.key or "", fontsize=6)
        panel.tick_params(labelsize=6)
        panel.set_ylabel("Val top-1 (%)", fontsize=6)
        panel.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_run_sweep(results: Mapping[str, Any], path: str | Path) -> Path | None:
    """``sweep.png`` of one run (:func:`sweep_figure`; None: nothing swept)."""
    fig = sweep_figure(results)
    if fig is None:
        return None
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


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


#: The label of the zero-shot bars of ``per_task.png``.
ZEROSHOT = "zero-shot"


def zeroshot_test(table: Table) -> dict[str, float] | None:
    """The zero-shot Test top-1 per task of a table's setting, from its runs' ``results.json``
    (None when no run recorded it, or when a ``zeroshot`` row already shows it)."""
    if any(row.method == "zeroshot" for row in table.rows):
        return None
    for row in table.rows:
        recorded = (row.run.results.get("zeroshot") or {}) if row.run is not None else {}
        if recorded and all(t in recorded for t in table.tasks):
            return {t: recorded[t]["test_top1"] for t in table.tasks}
    return None


def per_task_bars(table: Table) -> list[tuple[str, list[float | None], bool]]:
    """The bar groups of one table: (label, Test top-1 per task then the mean, is_finetuned);
    the zero-shot encoder's first when recorded (:func:`zeroshot_test`)."""
    bars: list[tuple[str, list[float | None], bool]] = []
    zeroshot = zeroshot_test(table)
    if zeroshot is not None:
        values: list[float | None] = [zeroshot[t] for t in table.tasks]
        bars.append((ZEROSHOT, [*values, sum(zeroshot.values()) / len(zeroshot)], False))
    for row in table.rows:
        bars.append((row.label, [*[row.test.get(t) for t in table.tasks], row.mean_abs],
                     row.method == FINETUNED))  # fmt: skip
    return bars


def plot_per_task(report: Report, path: str | Path) -> Path:
    """Test top-1 per task (and the mean) of every row, the zero-shot encoder's first: grouped
    bars with their values, one panel per setting."""
    fig = _figure(
        max(9, 1.6 * max(len(t.tasks) + 1 for t in report.tables)), 4.4 * len(report.tables)
    )
    axes = fig.subplots(len(report.tables), 1, squeeze=False)[:, 0]
    for ax, table in zip(axes, report.tables, strict=True):
        groups = [*table.tasks, "mean"]
        bars = per_task_bars(table)
        labels = {row.label: _plot_label(row, report) for row in table.rows}
        width = 0.85 / max(1, len(bars))
        for index, (label, values, finetuned) in enumerate(bars):
            xs = [g + (index - (len(bars) - 1) / 2) * width for g in range(len(groups))]
            ys = [100 * v if v is not None else 0.0 for v in values]
            color = "black" if finetuned else _color(index, len(bars))
            if label == ZEROSHOT:
                color = "lightgray"
            drawn = ax.bar(xs, ys, width, color=color, label=labels.get(label, label),
                           edgecolor="gray" if label == ZEROSHOT else None)  # fmt: skip
            ax.bar_label(drawn, labels=[f"{y:.0f}" if v is not None else "-"
                                        for y, v in zip(ys, values, strict=True)],
                         fontsize=6, padding=1)  # fmt: skip
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_ylabel("Test top-1 (%)")
        ax.set_ylim(0, 105)
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


def heatmap_title(result: DisentanglementResult, split: str | None = None) -> str:
    """A heatmap's title: the mode, the split, the grid and the mean error."""
    low, high, size = result.grid[0], result.grid[-1], len(result.grid)
    where = f"{split} split, " if split else ""
    return (
        f"{result.label}\n{where}{size} x {size} grid over [{low:g}, {high:g}]; "
        f"mean xi {result.xi.mean():.3f}"
    )


#: The colour bar's label: xi adds two tasks' disagreement rates, so it runs from 0 to 2.
XI_LABEL = "xi: sum of the 2 tasks' disagreement rates (0 to 2)"


def plot_heatmaps(
    results: Sequence[DisentanglementResult], path: str | Path, split: str | None = None
) -> Path:
    """One heatmap of xi per result, side by side, on one colour scale (PNG); the titles name
    the mode, ``split`` and the grid, the colour bar xi's range (0 to 2)."""
    top = max(float(r.xi.max()) for r in results) or 1.0
    fig = _figure(3.9 * len(results) + 0.8, 3.8)
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
        ax.set_title(heatmap_title(result, split), fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label=XI_LABEL)
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
