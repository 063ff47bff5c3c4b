"""What the plots draw, read back from the figures' own data (not pixels): sweep.png's chosen
point and its value, the zero-shot and fine-tuned levels, one panel per task, the grid-edge
flag; per_task.png's zero-shot bars and values; the heatmap titles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taskmerge.analysis.disentanglement import DisentanglementResult
from taskmerge.reporting.plots import (
    XI_LABEL,
    ZEROSHOT,
    heatmap_title,
    per_task_bars,
    plot_heatmaps,
    plot_per_task,
    plot_run_sweep,
    run_sweep,
    sweep_figure,
)
from taskmerge.reporting.runs import Report, Row, Run, Table

TASKS = ["A", "B"]
FINETUNED = {"A": 0.8, "B": 0.5}
ZERO = {"A": 0.4, "B": 0.25}


def results(edge: dict | None = None) -> dict:
    """A results.json of a 3-point sum sweep: val top-1 per task at 0.2, 0.4, 0.6."""
    top1 = {0.2: (0.6, 0.3), 0.4: (0.7, 0.45), 0.6: (0.65, 0.4)}
    sweep = []
    for coef, (a, b) in top1.items():
        norm = (a / 0.8 + b / 0.5) / 2
        sweep.append({"hyperparameters": {"scaling_coef": coef}, "val/A/top1": a,
                      "val/B/top1": b, "val/avg/normalized_top1": norm})  # fmt: skip
    return {
        "method": "sum",
        "tasks": TASKS,
        "hyperparameters": {"scaling_coef": 0.4},
        "val": {"avg": {"normalized_top1": (0.7 / 0.8 + 0.45 / 0.5) / 2}},
        "sweep": sweep,
        "finetuned": {t: {"val_top1": v, "test_top1": v} for t, v in FINETUNED.items()},
        "zeroshot": {t: {"val_top1": v, "test_top1": v} for t, v in ZERO.items()},
        "grid_edge": edge,
    }


def test_sweep_data() -> None:
    data = run_sweep(results())
    assert data.series.chosen == (0.4, pytest.approx(100 * (0.875 + 0.9) / 2))
    assert data.zeroshot == pytest.approx(100 * (0.4 / 0.8 + 0.25 / 0.5) / 2)  # 50%
    assert data.finetuned == 100.0
    assert data.per_task["B"] == [(0.2, 30.0), (0.4, 45.0), (0.6, 40.0)]
    assert data.task_zeroshot == {"A": 40.0, "B": 25.0}
    assert data.task_finetuned == {"A": 80.0, "B": 50.0}


def _lines(ax) -> list[tuple[list[float], list[float]]]:  # noqa: ANN001
    return [(list(map(float, ln.get_xdata())), list(map(float, ln.get_ydata())))
            for ln in ax.get_lines()]  # fmt: skip


def test_sweep_figure_draws_references_chosen_point_and_tasks() -> None:
    fig = sweep_figure(results())
    main, *panels = fig.axes
    assert [p.get_title() for p in panels] == TASKS
    lines = _lines(main)
    chosen = 100 * (0.875 + 0.9) / 2
    assert lines[0][0] == [0.2, 0.4, 0.6]  # the mean curve
    assert ([0.0, 1.0], [100.0, 100.0]) in lines  # fine-tuned level (axhline: axes x)
    assert ([0.0, 1.0], [50.0, 50.0]) in lines  # zero-shot level
    assert ([0.4], [pytest.approx(chosen)]) in lines  # the star
    legend = [t.get_text() for t in main.get_legend().get_texts()]
    assert f"chosen scaling_coef=0.4: {chosen:.1f}%" in legend
    assert "zero-shot (50.0%)" in legend and "fine-tuned (100%)" in legend
    assert f"{chosen:.1f}%" in [t.get_text() for t in main.texts]  # the value at the star
    b = _lines(panels[1])
    assert b[0] == ([0.2, 0.4, 0.6], [30.0, 45.0, 40.0])
    assert ([0.0, 1.0], [50.0, 50.0]) in b and ([0.0, 1.0], [25.0, 25.0]) in b
    assert ([0.4, 0.4], [0.0, 1.0]) in b  # the chosen value
    assert "edge" not in main.get_title()


def test_sweep_figure_flags_a_grid_edge(tmp_path: Path) -> None:
    edge = {"key": "scaling_coef", "value": 0.6, "edge": "upper",
            "override": "method.grid=[0.6,0.8,1.0]"}  # fmt: skip
    fig = sweep_figure(results(edge))
    main = fig.axes[0]
    assert "chosen scaling_coef=0.6 is the grid's upper edge" in main.get_title()
    assert any("method.grid=[0.6,0.8,1.0]" in t.get_text() for t in main.texts)
    assert plot_run_sweep(results(edge), tmp_path / "sweep.png").stat().st_size > 0


def test_sweep_without_zeroshot_draws_no_zeroshot_line() -> None:
    plain = results()
    del plain["zeroshot"]
    fig = sweep_figure(plain)
    assert not any("zero-shot" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def _table(with_zeroshot_row: bool = False) -> Table:
    run = Run(Path("/r"), results(), "s")
    rows = [Row("sum", "sum", "standard", False, {"A": 0.7, "B": 0.45}, 0.575, 0.8875, "0.4",
                None, run)]  # fmt: skip
    if with_zeroshot_row:
        rows.insert(0, Row("zeroshot", "zeroshot", "standard", False, dict(ZERO), 0.325, 0.5,
                           "-", None, run))  # fmt: skip
    return Table("tiny", "demo", TASKS, rows)


def test_per_task_bars_start_with_zeroshot(tmp_path: Path) -> None:
    bars = per_task_bars(_table())
    assert bars[0] == (ZEROSHOT, [0.4, 0.25, pytest.approx(0.325)], False)
    assert bars[1] == ("sum", [0.7, 0.45, 0.575], False)
    # a zeroshot run is already a row: not drawn twice
    assert [label for label, _, _ in per_task_bars(_table(True))] == ["zeroshot", "sum"]
    path = plot_per_task(Report([_table()], []), tmp_path / "per_task.png")
    assert path.stat().st_size > 0


def test_per_task_figure_labels_every_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskmerge.reporting import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: figures.append(fig) or path)
    plot_per_task(Report([_table()], []), tmp_path / "per_task.png")
    (ax,) = figures[0].axes
    values = sorted(t.get_text() for t in ax.texts)
    assert values == sorted(["40", "25", "32", "70", "45", "57"])  # 100 * 0.575 < 57.5
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [ZEROSHOT, "sum"]


def test_heatmap_title_names_split_grid_and_scale(tmp_path: Path) -> None:
    grid = [-2.0, 0.0, 2.0]
    shares = {"A": np.zeros((3, 3)), "B": np.zeros((3, 3))}
    result = DisentanglementResult(("A", "B"), grid, np.full((3, 3), 0.5), shares, "standard")
    title = heatmap_title(result, "test")
    assert title == "standard\ntest split, 3 x 3 grid over [-2, 2]; mean xi 0.500"
    assert "0 to 2" in XI_LABEL
    assert plot_heatmaps([result], tmp_path / "h.png", "test").stat().st_size > 0
