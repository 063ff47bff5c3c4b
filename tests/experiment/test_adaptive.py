"""``sweep=adaptive`` through ``run_merge``: the same chosen candidate, Val and Test points as
``sweep=grid`` from fewer Val evaluations on a unimodal curve; the full grid (and a warning)
on a curve with two peaks; the plain grid, with the reason, for what it does not search; and
``results.json``'s ``evaluations``."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from taskmerge.experiment.results import results_json
from taskmerge.experiment.run import make_references, run_merge
from taskmerge.merging.build import build_method
from taskmerge.vectors.task_vector import TaskVector

TASKS = ["A", "B"]
GRID = [round(0.1 * i, 10) for i in range(1, 16)]  # 15 points


class Readout:
    """Accuracy of a task: a function of the merged ``w``'s mean (for ``sum``: 2 x the
    coefficient), counting the Val evaluations."""

    task_names = TASKS

    def __init__(self, curve) -> None:  # noqa: ANN001 - (mean of w, task) -> accuracy
        self.curve = curve
        self.val_calls = 0

    def accuracy(self, state, task: str, split: str) -> float:  # noqa: ANN001
        self.val_calls += split == "val"
        return self.curve(float(state["w"].float().mean()), task)


def smooth(mean: float, task: str) -> float:
    """One peak: at coefficient 0.6 for A, 0.8 for B (the mean of w is 2 x the coefficient)."""
    target = {"A": 1.2, "B": 1.6}[task]
    return 0.9 - 0.1 * (mean - target) ** 2


def two_peaks(mean: float, task: str) -> float:
    """A peak at coefficient 0.3 and a lower one at 0.9 (for ``sum``)."""
    coef = mean / 2
    first, second = math.exp(-(((coef - 0.3) / 0.15) ** 2)), math.exp(-(((coef - 0.9) / 0.15) ** 2))
    return 0.5 + 0.3 * first + 0.2 * second


def _setup() -> tuple[dict, dict]:
    vectors = {t: TaskVector({"w": torch.ones(16)}) for t in TASKS}
    return {"w": torch.zeros(16)}, vectors


def _run(method_name: str, options: dict, curve, sweep_kind: str):  # noqa: ANN001, ANN202
    pretrained, vectors = _setup()
    method = build_method(method_name, options)
    evaluator = Readout(curve)
    finetuned = dict.fromkeys(TASKS, {"val_top1": 1.0, "test_top1": 1.0})
    references = make_references(TASKS, finetuned, None)
    outcome = run_merge(method, pretrained, vectors, evaluator, references, sweep_kind=sweep_kind)
    return outcome, evaluator


@pytest.mark.parametrize("method_name", ["sum", "ties", "magmax"])
def test_adaptive_chooses_what_the_grid_chooses_from_fewer_points(method_name: str) -> None:
    grid, grid_calls = _run(method_name, {"grid": GRID}, smooth, "grid")
    adaptive, adaptive_calls = _run(method_name, {"grid": GRID}, smooth, "adaptive")
    assert adaptive.chosen.hyperparameters == grid.chosen.hyperparameters
    assert adaptive.val.score == grid.val.score
    assert adaptive.test.metrics.top1 == grid.test.metrics.top1
    evaluations = adaptive.evaluations
    assert evaluations is not None and evaluations.sweep == "adaptive"
    assert evaluations.grid_points == len(GRID) and not evaluations.full_grid
    assert evaluations.candidates == len(adaptive.curve) <= len(GRID) // 2
    assert adaptive_calls.val_calls == len(TASKS) * evaluations.candidates
    assert grid_calls.val_calls == len(TASKS) * len(GRID)
    # the evaluated points are the grid's, in grid order
    by_coef = {p.hyperparameters["scaling_coef"]: p.score for p in grid.curve}
    coefs = [p.hyperparameters["scaling_coef"] for p in adaptive.curve]
    assert coefs == sorted(coefs)
    assert all(p.score == by_coef[p.hyperparameters["scaling_coef"]] for p in adaptive.curve)


def test_a_curve_with_two_peaks_falls_back_to_the_full_grid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    grid, _ = _run("sum", {"grid": GRID}, two_peaks, "grid")
    with caplog.at_level(logging.WARNING):
        adaptive, calls = _run("sum", {"grid": GRID}, two_peaks, "adaptive")
    assert adaptive.chosen.hyperparameters == grid.chosen.hyperparameters == {"scaling_coef": 0.3}
    assert adaptive.evaluations.full_grid and adaptive.evaluations.candidates == len(GRID)
    assert calls.val_calls == len(TASKS) * len(GRID)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "not unimodal" in w]) == 1


def test_cart_grid_is_searched_too() -> None:
    # CART builds its own grid source (theta0 + mean + lambda * low-rank sum)
    options = {"grid": GRID}
    grid, _ = _run("cart", options, smooth, "grid")
    adaptive, _ = _run("cart", options, smooth, "adaptive")
    assert adaptive.chosen.hyperparameters == grid.chosen.hyperparameters
    assert adaptive.evaluations.candidates <= adaptive.evaluations.grid_points


@pytest.mark.parametrize(
    ("method_name", "options", "reason"),
    [
        ("tall_mask", {}, "per-task selection"),
        ("sum", {"grid": [0.2, 0.4, 0.6]}, "a grid of 3 points"),
        ("sum", {"scaling_coef": 0.5}, "a grid of 1 point is"),
        ("TSVC", {}, "a grid of 1 point is"),
    ],
)
def test_what_the_search_does_not_take_runs_the_grid_with_the_reason(
    method_name: str, options: dict, reason: str
) -> None:
    grid, grid_calls = _run(method_name, options, smooth, "grid")
    adaptive, calls = _run(method_name, options, smooth, "adaptive")
    assert calls.val_calls == grid_calls.val_calls
    assert adaptive.chosen.hyperparameters == grid.chosen.hyperparameters
    evaluations = adaptive.evaluations
    assert evaluations.full_grid and evaluations.candidates == len(grid.curve)
    assert reason in evaluations.note


def test_results_json_records_the_evaluations() -> None:
    outcome, _ = _run("sum", {"grid": GRID}, smooth, "adaptive")
    record = results_json(outcome, {})["evaluations"]
    assert set(record) == {"sweep", "candidates", "grid_points", "full_grid", "note"}
    assert record["sweep"] == "adaptive" and record["grid_points"] == len(GRID)
    assert record["candidates"] == len(results_json(outcome, {})["sweep"])
    grid, _ = _run("sum", {"grid": GRID}, smooth, "grid")
    assert results_json(grid, {})["evaluations"] == {
        "sweep": "grid", "candidates": len(GRID), "grid_points": len(GRID), "full_grid": True,
        "note": None,
    }  # fmt: skip
