"""``sweep=adaptive``: the Val sweep by a bracket search over the grid's points
(:mod:`taskmerge.experiment.bracket`) instead of every point, for the methods with one grid over
a single swept hyperparameter; the same choice as ``sweep=grid`` whenever the Val curve is
unimodal, else (as the search sees it) the full grid.

Methods the search does not take run the plain grid, with the reason recorded: per-task
selection (TALL masks), methods learning from data or without a grid (one candidate), grids of
three points or fewer, and evaluators that score the whole grid in one pass (the linearized
forward's affine families: every point costs that one pass anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tqdm import tqdm

from taskmerge.evaluate.evaluator import Evaluator
from taskmerge.experiment.bracket import search_first_max
from taskmerge.experiment.points import Point
from taskmerge.experiment.selection import best_index
from taskmerge.experiment.sweep import OnPoint, evaluate_candidate, score_point
from taskmerge.merging.base import Candidate, GridSource, MergeMethod
from taskmerge.metrics import Reference

log = logging.getLogger(__name__)

#: The values of the ``sweep`` key.
SweepKind = Literal["grid", "adaptive"]
#: Grids this short are evaluated whole (a certified choice needs three points anyway).
SHORTEST_SEARCHED = 4
#: ``sweep_tolerance``'s default: the size of the bumps a Val curve may have around a unimodal
#: one (in selection-score units: 0.003 is 0.3 points of normalized accuracy), about the
#: standard error of a mean accuracy over 25,000 Val images (0.5 / sqrt(25,000); the standard
#: 8 tasks' Val splits). On the offline demo's curves (2,400 Val images) 0 missed TSV-M's
#: choice (a 0.0004 bump) and 0.003 found every method's.
DEFAULT_TOLERANCE = 0.003


@dataclass
class Evaluations:
    """What a Val sweep cost (``results.json``'s ``evaluations``).

    Attributes:
        sweep: ``grid`` or ``adaptive`` (what the config asked for).
        candidates: How many candidates were evaluated on Val.
        grid_points: How many the grid has.
        full_grid: Every grid point was evaluated.
        note: Why (the adaptive search's stop or fallback, or why it did not run); None for
            ``sweep=grid``.
    """

    sweep: SweepKind
    candidates: int
    grid_points: int
    full_grid: bool
    note: str | None = None

    def record(self) -> dict[str, Any]:
        """As ``results.json`` writes it."""
        return asdict(self)


@dataclass
class AdaptiveSweep:
    """An adaptive sweep's outcome: the evaluated (candidate, point) pairs in grid order (only
    the chosen one holds weights), the full grid's hyperparameters and the cost."""

    pairs: list[tuple[Candidate, Point]]
    grid: list[dict[str, Any]]
    evaluations: Evaluations


def adaptive_obstacle(method: MergeMethod, evaluator: Evaluator) -> str | None:
    """Why the adaptive search does not run this method's sweep (the plain grid runs), or
    None."""
    if method.select_per_task:
        return "per-task selection (each task its own best point) needs every grid point"
    if method.needs_data:
        return "the method learns from data: one candidate"
    if getattr(evaluator, "supports_affine", False):
        return "the linearized forward scores every grid point in one pass"
    points = method.grid_size()
    if points < SHORTEST_SEARCHED:
        return f"a grid of {points} point{'s' if points > 1 else ''} is evaluated whole"
    return None


def adaptive_sweep(
    method: MergeMethod,
    source: GridSource,
    evaluator: Evaluator,
    reference: Reference,
    on_point: OnPoint | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> AdaptiveSweep:
    """Search the grid of ``source`` on Val (the choice certified for curves within
    ``tolerance / 2`` of a unimodal one: :mod:`taskmerge.experiment.bracket`); keep only the
    weights of the best point so far."""
    points: dict[int, Point] = {}
    kept: dict[int, Candidate] = {}
    bar = tqdm(
        total=len(source), desc=f"{method.name}: adaptive Val, point", unit="point", leave=False
    )  # at most the grid: the search stops earlier

    def score(index: int) -> float | None:
        candidate = source.candidate(index)
        metrics = evaluate_candidate(evaluator, candidate, "val", reference.finetuned)
        point = score_point(method, candidate.hyperparameters, metrics, reference)
        if on_point is not None:
            on_point(len(points), point)
        points[index] = point
        if _is_first_best(points, index):
            kept.clear()
            kept[index] = candidate
        bar.update()
        return point.score

    try:
        search = search_first_max(len(source), score, tolerance)
    finally:
        bar.close()
    if search.fallback:
        log.warning("%s: sweep=adaptive: %s", method.name, search.note)
    log.info(
        "%s: sweep=adaptive evaluated %d of %d grid points (%s)",
        method.name, len(points), len(source), search.note,
    )  # fmt: skip
    pairs = [
        (kept[i] if i in kept else Candidate(dict(points[i].hyperparameters)), points[i])
        for i in sorted(points)
    ]
    cost = Evaluations("adaptive", len(points), len(source), search.full_grid, search.note)
    return AdaptiveSweep(pairs, [dict(p) for p in source.points], cost)


def _is_first_best(points: Mapping[int, Point], index: int) -> bool:
    """Whether grid point ``index`` is now the grid rule's choice among the evaluated points."""
    order = sorted(points)
    best = best_index([points[i].score for i in order])
    return best is not None and order[best] == index
