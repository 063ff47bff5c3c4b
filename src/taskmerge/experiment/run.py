"""One merge experiment: candidates -> Val sweep -> selection -> one Test evaluation.

:func:`run_merge` receives everything it works on (a bound method, the pretrained weights, the
task vectors, an evaluator, the reference accuracies) and returns a :class:`MergeOutcome`;
:mod:`taskmerge.experiment.results` turns it into ``results.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskmerge.errors import ConfigError
from taskmerge.evaluate.evaluator import Evaluator
from taskmerge.experiment.consensus_masks import resolve_chosen_lambdas
from taskmerge.experiment.grid_edges import grid_edge
from taskmerge.experiment.points import Point
from taskmerge.experiment.selection import Selection
from taskmerge.experiment.sweep import OnPoint, evaluate_candidate, score_point, sweep
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.metrics import Reference
from taskmerge.vectors.task_vector import TaskVector, check_same_mode

log = logging.getLogger(__name__)

StateDict = Mapping[str, Any]
#: Task -> {"val_top1": ..., "test_top1": ...}
Accuracies = Mapping[str, Mapping[str, float]]


@dataclass
class MergeOutcome:
    """What one merge experiment found: the chosen candidate, its Val and Test points, the whole
    Val curve, the references and whether the choice sits on a grid edge."""

    method: MergeMethod
    chosen: Candidate
    val: Point
    test: Point
    curve: list[Point]
    references: dict[str, Reference]
    grid_edge: dict[str, Any] | None
    seconds: float


def make_references(
    tasks: list[str], finetuned: Accuracies, zeroshot: Mapping[str, Mapping[str, float]] | None
) -> dict[str, Reference]:
    """Split -> the per-task fine-tuned (and zero-shot) accuracies candidates are compared with."""
    return {
        split: Reference(
            tasks, {t: finetuned[t][f"{split}_top1"] for t in tasks}, (zeroshot or {}).get(split)
        )
        for split in ("val", "test")
    }


def evaluate_on_test(
    method: MergeMethod, chosen: Candidate, evaluator: Evaluator, reference: Reference
) -> Point:
    """The chosen weights on Test, once (with the method's derived metrics; not scored)."""
    metrics = evaluate_candidate(
        evaluator, chosen, "test", reference.finetuned, progress=f"{method.name}: Test, task"
    )
    point = score_point(method, chosen.hyperparameters, metrics, reference)
    point.score = None
    return point


def run_merge(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    references: Mapping[str, Reference],
    on_point: OnPoint | None = None,
) -> MergeOutcome:
    """Merge, sweep the method's hyperparameters on Val, evaluate the chosen one on Test.

    Args:
        method: A bound merge method (:meth:`MergeMethod.bind`).
        pretrained: The pretrained encoder's state dict.
        task_vectors: Task -> task vector, in the evaluator's task order.
        evaluator: Scores weights on the tasks' Val and Test splits.
        references: Split -> the fine-tuned (and, when the method needs them, zero-shot)
            accuracies measured by this project (:func:`make_references`).
        on_point: Called with every Val point as the sweep goes (e.g. to log it).
    """
    start = time.time()
    tasks = evaluator.task_names
    if list(task_vectors) != list(tasks):
        raise ConfigError(f"task vectors {list(task_vectors)} do not match the tasks {tasks}")
    check_same_mode(task_vectors)
    resolve_chosen_lambdas(method, pretrained, task_vectors, evaluator, references["val"])
    # select on Val: the method's score (default: the mean normalized accuracy), ties to the
    # first grid point; only the chosen weights are kept
    selection = Selection(references["val"].finetuned, per_task=method.select_per_task)
    for candidate, point in sweep(
        method, pretrained, task_vectors, evaluator, references["val"], on_point
    ):
        selection.offer(candidate, point)
    chosen, val = selection.result(method.name)
    method.chosen(chosen.hyperparameters, tasks)
    curve = selection.curve
    test = evaluate_on_test(method, chosen, evaluator, references["test"])
    edge = grid_edge(
        [p.hyperparameters for p in curve], chosen.hyperparameters, method.natural_bounds()
    )
    if edge:
        log.warning(
            "%s: the chosen %s=%g is the %s edge of the swept grid, the optimum may lie beyond "
            "it: rerun with %s",
            method.name, edge["key"], edge["value"], edge["edge"], edge["override"],
        )  # fmt: skip
    return MergeOutcome(
        method, chosen, val, test, curve, dict(references), edge, time.time() - start
    )
