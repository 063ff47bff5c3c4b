"""One merge experiment: candidates -> Val sweep -> selection -> one Test evaluation.

:func:`run_merge` receives everything it works on (a bound method, the pretrained weights, the
task vectors, an evaluator, the reference accuracies) and returns a :class:`MergeOutcome`;
:mod:`taskmerge.experiment.results` turns it into ``results.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from taskmerge.errors import ConfigError
from taskmerge.evaluate.evaluator import Evaluator
from taskmerge.experiment.adaptive import (
    DEFAULT_TOLERANCE,
    AdaptiveSweep,
    Evaluations,
    SweepKind,
    adaptive_obstacle,
    adaptive_sweep,
)
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
    """What one merge experiment found: the chosen candidate, its Val and Test points, the Val
    curve (every evaluated point, in grid order), the references, whether the choice sits on a
    grid edge and what the sweep cost."""

    method: MergeMethod
    chosen: Candidate
    val: Point
    test: Point
    curve: list[Point]
    references: dict[str, Reference]
    grid_edge: dict[str, Any] | None
    seconds: float
    evaluations: Evaluations | None = field(default=None)


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
    sweep_kind: SweepKind = "grid",
    sweep_tolerance: float = DEFAULT_TOLERANCE,
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
        sweep_kind: ``grid`` (every grid point, the default) or ``adaptive``
            (:mod:`taskmerge.experiment.adaptive`: the grid's choice on a unimodal Val curve
            from fewer points).
        sweep_tolerance: For ``adaptive``: the bumps the Val curve may have around a unimodal
            one (the choice is certified for curves within half of it).
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
    searched, obstacle = None, None
    if sweep_kind == "adaptive":
        obstacle = adaptive_obstacle(method, evaluator)
        if obstacle is None:
            searched, obstacle = _search(
                method, pretrained, task_vectors, evaluator, references["val"], on_point,
                sweep_tolerance,
            )  # fmt: skip
        if obstacle is not None:
            log.info("%s: sweep=adaptive runs the full grid: %s", method.name, obstacle)
    pairs: Iterable[tuple[Candidate, Point]] = (
        searched.pairs
        if searched is not None
        else sweep(method, pretrained, task_vectors, evaluator, references["val"], on_point)
    )
    for candidate, point in pairs:
        selection.offer(candidate, point)
    chosen, val = selection.result(method.name)
    method.chosen(chosen.hyperparameters, tasks)
    curve = selection.curve
    test = evaluate_on_test(method, chosen, evaluator, references["test"])
    grid = searched.grid if searched is not None else [p.hyperparameters for p in curve]
    edge = grid_edge(grid, chosen.hyperparameters, method.natural_bounds())
    if edge:
        log.warning(
            "%s: the chosen %s=%g is the %s edge of the swept grid, the optimum may lie beyond "
            "it: rerun with %s",
            method.name, edge["key"], edge["value"], edge["edge"], edge["override"],
        )  # fmt: skip
    evaluations = (
        searched.evaluations
        if searched is not None
        else Evaluations(sweep_kind, len(curve), len(curve), True, obstacle)
    )
    return MergeOutcome(
        method, chosen, val, test, curve, dict(references), edge, time.time() - start, evaluations
    )


def _search(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    reference: Reference,
    on_point: OnPoint | None,
    tolerance: float,
) -> tuple[AdaptiveSweep | None, str | None]:
    """The adaptive sweep, or (None, why not) when the method's candidates are not one grid."""
    log.info("%s: merging %d task vectors", method.name, len(task_vectors))
    source = method.grid_source(pretrained, task_vectors)
    if source is None:
        return None, "the method's candidates are not one grid of a single merge"
    return adaptive_sweep(method, source, evaluator, reference, on_point, tolerance), None
