"""The one writer (and reader) of metric names: typed metrics as the flat, slash-named records of
``results.json`` and W&B (``val/MNIST/top1``, ``test/avg/normalized_top1``, ``val/target/top1``,
``val/selection_score``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskmerge.experiment.points import Point
from taskmerge.metrics import SplitMetrics

SCORE = "selection_score"
AVG = "avg"


def split_record(metrics: SplitMetrics) -> dict[str, float]:
    """``<split>/<task>/top1``, ``.../normalized_top1`` and their means."""
    split, record = metrics.split, {}
    for task in metrics.tasks:
        record[f"{split}/{task}/top1"] = metrics.top1[task]
        record[f"{split}/{task}/normalized_top1"] = metrics.normalized(task)
    record[f"{split}/{AVG}/top1"] = metrics.mean_top1
    record[f"{split}/{AVG}/normalized_top1"] = metrics.mean_normalized
    return record


def derived_record(split: str, derived: Mapping[str, float]) -> dict[str, float]:
    """A method's derived metrics under their split (``val/target/top1``)."""
    return {f"{split}/{name}": value for name, value in derived.items()}


def point_record(point: Point, scored: bool = True) -> dict[str, Any]:
    """One sweep point as a ``results.json`` ``sweep`` entry (hyperparameters, accuracies, the
    method's derived metrics and, when ``scored``, the selection score)."""
    split = point.metrics.split
    record: dict[str, Any] = {"hyperparameters": dict(point.hyperparameters)}
    record.update(split_record(point.metrics))
    record.update(derived_record(split, point.derived))
    if scored:
        record[f"{split}/{SCORE}"] = point.score
    return record


def loggable(record: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a record a tracker takes: no hyperparameters, no inadmissible (None)
    scores."""
    return {k: v for k, v in record.items() if k != "hyperparameters" and v is not None}


def sweep_log(point: Point) -> dict[str, Any]:
    """What the tracker logs for one sweep point: its record and ``sweep/<hyperparameter>``."""
    hyper = {f"sweep/{k}": v for k, v in point.hyperparameters.items()}
    return loggable(point_record(point)) | hyper


def per_task_table(metrics: SplitMetrics) -> dict[str, dict[str, float]]:
    """``results.json``'s ``test`` / ``val`` table: task -> top-1, normalized, fine-tuned; and
    ``avg``."""
    table: dict[str, dict[str, float]] = {
        task: {
            "top1": metrics.top1[task],
            "normalized_top1": metrics.normalized(task),
            "finetuned_top1": metrics.finetuned[task],
        }
        for task in metrics.tasks
    }
    table[AVG] = {"top1": metrics.mean_top1, "normalized_top1": metrics.mean_normalized}
    return table


def mean_normalized(record: Mapping[str, Any], split: str = "val") -> float | None:
    """The mean normalized top-1 of a ``sweep`` record (None when absent)."""
    return record.get(f"{split}/{AVG}/normalized_top1")


def selection_score(record: Mapping[str, Any], split: str = "val") -> float | None:
    """The selection score of a ``sweep`` record (None: inadmissible or absent)."""
    return record.get(f"{split}/{SCORE}")


def avg_log(averages: Mapping[str, float], split: str) -> dict[str, float]:
    """A ``results.json`` ``avg`` table entry as tracker keys (``test/avg/top1``)."""
    return {f"{split}/{AVG}/{name}": value for name, value in averages.items()}


def zeroshot_log(zeroshot: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Split -> task -> zero-shot top-1 as tracker keys (``zeroshot/val/MNIST/top1``)."""
    return {
        f"zeroshot/{split}/{task}/top1": value
        for split, per_task in zeroshot.items()
        for task, value in per_task.items()
    }
