"""A scored candidate of a sweep: its hyperparameters, its accuracies on one split, the
method's derived metrics and the selection score."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskmerge.metrics import SplitMetrics


@dataclass
class Point:
    """One evaluated candidate.

    Attributes:
        hyperparameters: The candidate's hyperparameters (per-task selection: task -> value).
        metrics: Its per-task top-1 on the split.
        derived: The method's extra metrics (e.g. ``target/top1``), names without the split.
        score: The selection score on Val (None: inadmissible, or not scored).
    """

    hyperparameters: dict[str, Any]
    metrics: SplitMetrics
    derived: dict[str, float] = field(default_factory=dict)
    score: float | None = None
