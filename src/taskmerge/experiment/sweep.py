"""The Val sweep: every candidate of a method scored on Val, in grid order, one in memory at a
time."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tqdm import tqdm

from taskmerge.evaluate.evaluator import Evaluator
from taskmerge.experiment.points import Point
from taskmerge.merging.base import AffineFamily, Candidate, MergeMethod
from taskmerge.metrics import Reference, SplitMetrics
from taskmerge.vectors.task_vector import TaskVector

log = logging.getLogger(__name__)

StateDict = Mapping[str, Any]
#: Called with each point's index and the point as the sweep goes (e.g. to log it).
OnPoint = Callable[[int, Point], None]


def evaluate_candidate(
    evaluator: Evaluator,
    candidate: Candidate,
    split: str,
    finetuned: Mapping[str, float],
    progress: str | None = None,
) -> SplitMetrics:
    """Per-task top-1 of one candidate on ``split`` (``val`` or ``test``); ``progress`` names a
    bar over the tasks (task i/N and the time left), none when None."""
    tasks = list(evaluator.task_names)
    bar = tqdm(tasks, desc=progress, unit="task", leave=False, disable=progress is None)
    top1 = {task: evaluator.accuracy(candidate.for_task(task), task, split) for task in bar}
    return SplitMetrics(split, top1, finetuned)


def score_point(
    method: MergeMethod, hyperparameters: Mapping[str, Any], metrics: SplitMetrics,
    reference: Reference,
) -> Point:  # fmt: skip
    """The point of one evaluated candidate: the method's derived metrics and its score."""
    derived = method.derived_metrics(metrics, reference)
    score = method.score(metrics, derived, hyperparameters)
    return Point(dict(hyperparameters), metrics, derived, score)


def sweep(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    reference: Reference,
    on_point: OnPoint | None = None,
) -> Iterator[tuple[Candidate, Point]]:
    """Score each of the method's candidates on Val, in grid order, one in memory at a time.

    When the evaluator scores affine families in one pass (the linearized forward) and the
    method's candidates are one (theta0 + coefficients x directions: one merged vector times a
    coefficient, LiNeS' alpha and beta), every grid point comes from one JVP per direction and
    image instead of one forward per point; otherwise each candidate is evaluated directly.
    """
    family = None
    if getattr(evaluator, "supports_affine", False):
        family = method.affine_family(pretrained, task_vectors)
    points = (
        _affine_points(family, pretrained, evaluator, reference)
        if family is not None
        else _direct_points(method, pretrained, task_vectors, evaluator, reference)
    )
    for step, (candidate, metrics) in enumerate(points):
        point = score_point(method, candidate.hyperparameters, metrics, reference)
        if on_point is not None:
            on_point(step, point)
        yield candidate, point


def _direct_points(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    reference: Reference,
) -> Iterator[tuple[Candidate, SplitMetrics]]:
    candidates = method.candidates(pretrained, task_vectors)
    log.info("%s: merging %d task vectors", method.name, len(task_vectors))
    first = next(candidates, None)  # the merge itself (and its checks) before any evaluation
    if first is None:
        return
    total = method.grid_size()
    bar = tqdm(
        itertools.chain([first], candidates),
        desc=f"{method.name}: Val, grid point",
        total=total,
        unit="point",
        leave=False,
    )  # "grid point j/M", the time per point and the time left
    for candidate in bar:
        yield candidate, evaluate_candidate(evaluator, candidate, "val", reference.finetuned)


def _affine_points(
    family: AffineFamily, pretrained: StateDict, evaluator: Evaluator, reference: Reference
) -> Iterator[tuple[Candidate, SplitMetrics]]:
    coefficients = [coefs for _, coefs in family.points]
    per_task = {
        task: evaluator.affine_accuracies(family.directions, coefficients, task, "val")  # type: ignore[attr-defined]
        for task in tqdm(
            evaluator.task_names,
            desc=f"one-pass linearized Val of {len(coefficients)} grid points, task",
            unit="task",
            leave=False,
        )
    }
    for index in range(len(family.points)):
        top1 = {task: values[index] for task, values in per_task.items()}
        yield family.candidate(pretrained, index), SplitMetrics("val", top1, reference.finetuned)
