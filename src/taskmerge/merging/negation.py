"""Task negation: forget one task by subtracting its task vector (Ilharco et al.,
arXiv:2212.04089; Ortiz-Jimenez et al., arXiv:2305.12827).

``theta0 - alpha * tau_target``, alpha swept on Val (reference grid: 0.0..1.0 in 21 points,
``gortizji/tangent_task_arithmetic`` ``src/eval.py``). Admissible alphas keep the mean control
top-1 >= ``control_threshold`` (0.95) x its zero-shot value. Among them the reference
(``src/eval_task_negation.py`` + ``find_optimal_coef(minimize=True)``) takes the lowest target
Val accuracy, ties to the first grid point: ``selection="min_target"``, the default here.
``selection="largest_coef"`` takes the largest admissible alpha instead (the rule as the
project's method notes state it; the two agree when the target accuracy falls monotonically).

The reference's control task is ImageNet; here the control tasks are the other tasks of the
task set (or ``control_tasks``), and their mean accuracy is compared with their mean zero-shot
accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.merging.base import Derived, Hyper, MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.target_control import (
    meets_control_threshold,
    target_and_controls,
    target_control_metrics,
)
from taskmerge.metrics import Reference, SplitMetrics
from taskmerge.vectors.task_vector import TaskVector

SELECTIONS = ("min_target", "largest_coef")
#: ``np.linspace(0, 1, 21)`` of the reference.
NEGATION_GRID = [round(i / 20, 10) for i in range(21)]


@register_method("negation", scaled=True)
class TaskNegation(MergeMethod):
    """theta0 - alpha * tau_target; alpha chosen under a control-accuracy constraint.

    Args:
        task_index: The task to forget (index into the task list).
        control_tasks: Task names that must keep their accuracy; None: all other tasks.
        control_threshold: Fraction of the zero-shot control accuracy that must be kept.
        selection: ``"min_target"`` (reference) or ``"largest_coef"``.
        scaling_coef: Fixed alpha, or None to sweep ``grid``.
        grid: Alphas tried on Val (include 0.0 so that one is always admissible).
    """

    needs_zeroshot = True

    def __init__(
        self,
        task_index: int = 0,
        control_tasks: Sequence[str] | None = None,
        control_threshold: float = 0.95,
        selection: Literal["min_target", "largest_coef"] = "min_target",
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid or NEGATION_GRID)
        if selection not in SELECTIONS:
            raise ConfigError(f"method.selection must be one of {SELECTIONS}, got {selection!r}")
        if not 0 <= control_threshold <= 1:
            raise ConfigError(
                f"method.control_threshold={control_threshold} must be a fraction in [0, 1]"
            )
        self.task_index, self.control_threshold, self.selection = (
            task_index,
            control_threshold,
            selection,
        )
        self.control_tasks = list(control_tasks) if control_tasks is not None else None
        self.target: str | None = None
        self.controls: list[str] = []

    def bind(
        self, encoder: nn.Module | None, tasks: Sequence[str], *, mask_dir: Path | None = None
    ) -> MergeMethod:
        """Resolve the target and control tasks (a clear error for a bad index or name)."""
        self.target, self.controls = target_and_controls(tasks, self.task_index, self.control_tasks)
        return self

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:
        """``-tau_target`` (the coefficient is applied at the end)."""
        target, _ = target_and_controls(list(task_vectors), self.task_index, self.control_tasks)
        return -task_vectors[target]

    def derived_metrics(self, metrics: SplitMetrics, reference: Reference) -> dict[str, float]:
        """Target accuracy and its drops, control accuracy and whether it meets the threshold."""
        target, controls = target_and_controls(reference.tasks, self.task_index, self.control_tasks)
        out = target_control_metrics(metrics, target, controls, reference)
        out["control/meets_threshold"] = float(meets_control_threshold(out, self.control_threshold))
        return out

    def score(self, metrics: SplitMetrics, derived: Derived, hyper: Hyper) -> float | None:
        """None below the control threshold; else -target top-1 or alpha (see ``selection``)."""
        if not derived["control/meets_threshold"]:
            return None
        if self.selection == "largest_coef":
            return float(hyper["scaling_coef"])
        return -derived["target/top1"]

    def details(self) -> dict[str, Any]:  # noqa: D102
        return {
            "target_task": self.target,
            "control_tasks": self.controls,
            "control_threshold": self.control_threshold,
            "selection": self.selection,
        }
