"""Typed metrics: the top-1 accuracies of one split, normalized by the fine-tuned ones.

:class:`SplitMetrics` is what scoring produces and selection, methods and reports read; the
slash-named strings of ``results.json`` and W&B (``val/MNIST/top1``) are written and read only
by :mod:`taskmerge.experiment.records`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def normalized_accuracy(accuracy: float, finetuned_accuracy: float) -> float:
    """Merged top-1 divided by the fine-tuned top-1 of the same task and split (0 when the
    fine-tuned one is 0)."""
    return accuracy / finetuned_accuracy if finetuned_accuracy > 0 else 0.0


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean of a non-empty sequence."""
    return sum(values) / len(values)


@dataclass(frozen=True)
class Reference:
    """The accuracies a candidate is compared with, per task, on one split.

    Attributes:
        tasks: Task names in order (``task_index`` counts in this list).
        finetuned: Task -> top-1 of its fine-tuned encoder.
        zeroshot: Task -> top-1 of the pretrained encoder; None when no method asked for it.
    """

    tasks: Sequence[str]
    finetuned: Mapping[str, float]
    zeroshot: Mapping[str, float] | None = None


@dataclass(frozen=True)
class SplitMetrics:
    """Per-task top-1 of one candidate on one split, and the fine-tuned top-1 of each task on
    the same split (what normalized accuracy divides by).

    Attributes:
        split: ``val`` or ``test``.
        top1: Task -> top-1, in task order.
        finetuned: Task -> fine-tuned top-1 (at least the tasks of ``top1``).
    """

    split: str
    top1: Mapping[str, float]
    finetuned: Mapping[str, float]

    @property
    def tasks(self) -> list[str]:
        """The tasks, in order."""
        return list(self.top1)

    def normalized(self, task: str) -> float:
        """One task's top-1 over its fine-tuned top-1."""
        return normalized_accuracy(self.top1[task], self.finetuned[task])

    @property
    def mean_top1(self) -> float:
        """Mean absolute top-1 over the tasks."""
        return mean([self.top1[t] for t in self.top1])

    @property
    def mean_normalized(self) -> float:
        """Mean normalized top-1 over the tasks (the default selection criterion)."""
        return mean([self.normalized(t) for t in self.top1])
