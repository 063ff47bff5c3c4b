"""A chosen value on the edge of a swept grid is reported with the override that extends it."""

from __future__ import annotations

from taskmerge.experiment.grid_edges import grid_edge
from taskmerge.merging.arithmetic import TaskArithmetic
from taskmerge.merging.lines import with_lines
from taskmerge.merging.negation import TaskNegation


def _curve(key: str, values: list[float]) -> list[dict]:
    return [{key: v} for v in values]


GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_upper_edge_is_reported_with_an_extended_grid() -> None:
    edge = grid_edge(_curve("beta", GRID), {"alpha": 0.125, "beta": 1.0}, {"beta": (0.0, None)})
    assert edge["key"] == "beta" and edge["edge"] == "upper" and edge["value"] == 1.0
    assert (
        edge["override"]
        == "method.grid=[" + ",".join(f"{x:g}" for x in [*GRID, 1.1, 1.2, 1.3, 1.4, 1.5]) + "]"
    )


def test_inner_points_and_natural_bounds_are_not_edges() -> None:
    bounds = TaskArithmetic().natural_bounds()
    assert grid_edge(_curve("scaling_coef", GRID), {"scaling_coef": 0.4}, bounds) is None
    # the lower edge 0.0 of negation is a natural bound (a negative coefficient adds the task)
    negation = [0.0, 0.05, 0.1]
    assert grid_edge(_curve("scaling_coef", negation), {"scaling_coef": 0.0}, bounds) is None
    editing = with_lines(TaskNegation(), apply_lines=False).natural_bounds()
    assert editing == {"scaling_coef": (0.0, None)}


def test_lower_edge_above_the_bound_and_editing_alpha() -> None:
    bounds = {"scaling_coef": (0.0, None)}
    edge = grid_edge(_curve("scaling_coef", GRID), {"scaling_coef": 0.1}, bounds)
    assert edge["edge"] == "lower" and edge["override"].startswith("method.grid=[0,0.1,0.2")
    from taskmerge.merging.arithmetic import SingleTask
    from taskmerge.merging.lines import LiNeS

    lines = LiNeS(SingleTask(), editing=True)
    alphas = [1.0, 0.5, 0.0]
    assert grid_edge(_curve("alpha", alphas), {"alpha": 1.0}, lines.natural_bounds()) is None


def test_fixed_coefficients_and_per_task_choices_are_not_checked() -> None:
    assert grid_edge(_curve("scaling_coef", [1.0]), {"scaling_coef": 1.0}, {}) is None
    per_task = {"tall_mask_lambda": {"A": 0.2}}
    assert grid_edge(_curve("tall_mask_lambda", [0.2, 0.4, 0.6]), per_task, {}) is None
