"""Weight disentanglement (Ortiz-Jimenez et al., arXiv:2305.12827, Eq. 4).

For a pair of tasks with vectors tau_1, tau_2 and coefficients (a1, a2)::

    xi(a1, a2) = sum_{t in {1, 2}} E_{x ~ task t} [ pred(x; theta0 + a1 tau1 + a2 tau2)
                                                  != pred(x; theta0 + a_t tau_t) ]

0 means each task's predictions are unaffected by adding the other task's vector. The
expectation is over the WHOLE split (every sample counted once; a reference implementation
divides a sum over the first 16 batches by the full loader length, which understates xi).

Through the linearized forward every weight here is theta0 + c1 tau1 + c2 tau2, so all grid
points and baselines of a task come from one primal pass and two JVPs per image
(:meth:`~taskmerge.evaluate.evaluator.TaskEvaluator.affine_predictions`); otherwise each point is
evaluated directly (|grid|^2 + |grid| forward passes per task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from taskmerge.merging.base import AffineFamily

Vector = Mapping[str, torch.Tensor]


def coefficient_grid(low: float = -2.0, high: float = 2.0, points: int = 15) -> list[float]:
    """``points`` evenly spaced coefficients from ``low`` to ``high`` (the reference: 15 on
    [-2, 2])."""
    return [round(float(v), 10) for v in np.linspace(low, high, points)]


@dataclass
class DisentanglementResult:
    """xi on a grid, and each task's share of it (rows: a1, columns: a2)."""

    tasks: tuple[str, str]
    grid: list[float]
    xi: np.ndarray
    per_task: dict[str, np.ndarray]
    label: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain containers for the results JSON."""
        return {
            "label": self.label,
            "tasks": list(self.tasks),
            "grid": self.grid,
            "xi": self.xi.tolist(),
            "per_task": {task: values.tolist() for task, values in self.per_task.items()},
            "mean_xi": float(self.xi.mean()),
            "max_xi": float(self.xi.max()),
            **self.info,
        }


def evaluation_count(grid_points: int) -> int:
    """Split evaluations the direct route makes for one pair: per task, every grid cell and
    the task's own baselines (|grid|^2 + |grid|)."""
    return 2 * (grid_points * grid_points + grid_points)


def _points(grid: Sequence[float], index: int) -> list[tuple[float, float]]:
    """Every (a1, a2) of the grid, row-major, then the baselines of task ``index``
    (a on its own vector, 0 on the other)."""
    pairs = [(a1, a2) for a1 in grid for a2 in grid]
    baselines = [(a, 0.0) if index == 0 else (0.0, a) for a in grid]
    return pairs + baselines


def disentanglement_error(
    evaluator: Any,
    pretrained: Vector,
    vectors: Sequence[Vector],
    tasks: Sequence[str],
    grid: Sequence[float],
    split: str = "test",
) -> DisentanglementResult:
    """xi(a1, a2) over ``grid`` x ``grid`` for two tasks and their task vectors.

    Args:
        evaluator: A :class:`~taskmerge.evaluate.evaluator.TaskEvaluator` (its forward is the one
            measured; a linear one takes the one-pass route).
        pretrained: theta0's state dict.
        vectors: tau_1, tau_2 (parameter name -> tensor).
        tasks: The two task names, in the order of ``vectors``.
        grid: The coefficients (both axes).
        split: ``val`` or ``test``.
    """
    if len(vectors) != 2 or len(tasks) != 2:
        raise ValueError("the disentanglement error is defined for a pair of tasks")
    size = len(grid)
    per_task: dict[str, np.ndarray] = {}
    one_pass = getattr(evaluator, "supports_affine", False)
    bar = tqdm(
        total=2 if one_pass else evaluation_count(size),
        desc=f"disentanglement {tasks[0]}/{tasks[1]}, {'task (one pass)' if one_pass else 'cell'}",
        unit="task" if one_pass else "cell",
        leave=False,
    )  # cell k/K (a grid point or a baseline on one task's split) and the time left
    for index, task in enumerate(tasks):
        points = _points(grid, index)
        family = AffineFamily([dict(v) for v in vectors], [({}, p) for p in points])
        if one_pass:
            predictions, _ = evaluator.affine_predictions(family.directions, points, task, split)
            bar.update()
        else:
            rows = []
            for i in range(len(points)):
                candidate = family.candidate(pretrained, i).shared
                rows.append(evaluator.predictions(candidate, task, split)[0])
                bar.update()
            predictions = torch.stack(rows)
        joint, alone = predictions[: size * size], predictions[size * size :]
        steps = torch.arange(size)  # row-major (a1, a2): task 1 keeps a1, task 2 keeps a2
        own = steps.repeat_interleave(size) if index == 0 else steps.repeat(size)
        mismatch = (joint != alone[own]).float().mean(dim=1)  # whole split, every sample once
        per_task[task] = mismatch.reshape(size, size).numpy()
    bar.close()
    xi = per_task[tasks[0]] + per_task[tasks[1]]
    return DisentanglementResult((tasks[0], tasks[1]), list(grid), xi, per_task)
