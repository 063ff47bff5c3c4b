"""Choosing on Val: the highest selection score (ties to the first grid point), or each task's
best candidate (TALL masks), keeping only the chosen weights in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from taskmerge.errors import ConfigError
from taskmerge.experiment.points import Point
from taskmerge.merging.base import Candidate
from taskmerge.metrics import SplitMetrics


def best_index(scores: Sequence[float | None]) -> int | None:
    """Index of the highest score, ties to the first; ``None`` scores are inadmissible."""
    best: int | None = None
    for index, score in enumerate(scores):
        if score is not None and (best is None or score > scores[best]):  # type: ignore[operator]
            best = index
    return best


@dataclass
class Selection:
    """Keeps the Val-best weights of a sweep as it runs (only those stay in memory).

    Global selection (default): the highest selection score, ties to the first grid point.
    Per-task selection (``per_task=True``, TALL masks): each task keeps the candidate that gives
    it the highest normalized Val accuracy (ties to the earlier one), so the chosen
    hyperparameters are a task -> value table.
    """

    finetuned: Mapping[str, float]
    per_task: bool = False
    curve: list[Point] = field(default_factory=list)
    _best: Candidate | None = None
    _top1: dict[str, float] = field(default_factory=dict)

    def offer(self, candidate: Candidate, point: Point) -> None:
        """Record one swept point; keep its weights if they are (so far) the chosen ones."""
        self.curve.append(point)
        if self.per_task:
            self._offer_per_task(candidate, point)
        elif best_index(self.scores) == len(self.curve) - 1:
            self._best = candidate

    @property
    def scores(self) -> list[float | None]:
        """The selection score of every point so far."""
        return [point.score for point in self.curve]

    def result(self, method_name: str) -> tuple[Candidate, Point]:
        """The chosen candidate and its Val point.

        Raises:
            ConfigError: no candidate is admissible (e.g. none keeps the control accuracy).
        """
        if not self.curve:
            raise RuntimeError(f"method {method_name} produced no candidate")
        if self.per_task:
            assert self._best is not None
            metrics = SplitMetrics("val", dict(self._top1), self.finetuned)
            return self._best, Point(self._best.hyperparameters, metrics)
        chosen = best_index(self.scores)
        if chosen is None or self._best is None:
            raise ConfigError(
                f"no {method_name} candidate is admissible on Val (e.g. none keeps the control "
                "accuracy above method.control_threshold): add 0.0 to method.grid or lower the "
                "threshold"
            )
        return self._best, self.curve[chosen]

    def _offer_per_task(self, candidate: Candidate, point: Point) -> None:
        if self._best is None:
            self._best = Candidate({}, per_task={})
        chosen = self._best
        for task in self.finetuned:
            value = point.metrics.normalized(task)
            if task not in chosen.per_task or value > self._normalized(task):
                chosen.per_task[task] = candidate.for_task(task)
                for name, hyper in candidate.hyperparameters.items():
                    chosen.hyperparameters.setdefault(name, {})[task] = hyper
                self._top1[task] = point.metrics.top1[task]

    def _normalized(self, task: str) -> float:
        return SplitMetrics("val", {task: self._top1[task]}, self.finetuned).normalized(task)
