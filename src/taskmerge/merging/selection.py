"""Val selection criteria beyond the default mean normalized accuracy.

Shared by single-task editing with LiNeS (target vs control trade-off) and task negation
(forget the target while the control tasks stay near their zero-shot accuracy). Metric names
follow the rest of the project: ``<split>/<task>/top1`` in, ``<split>/target/...`` and
``<split>/control/...`` out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskmerge.errors import ConfigError
from taskmerge.evaluation import normalized_accuracy


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


def target_and_controls(
    tasks: Sequence[str], task_index: int, control_tasks: Sequence[str] | None = None
) -> tuple[str, list[str]]:
    """The target task (``task_index`` into ``tasks``) and the control tasks.

    Control tasks default to every other task of the set.

    Raises:
        ConfigError: ``task_index`` out of range, or a control task unknown or equal to the target.
    """
    if not 0 <= task_index < len(tasks):
        raise ConfigError(
            f"method.task_index={task_index} is out of range for {len(tasks)} tasks "
            f"{list(tasks)}: use 0..{len(tasks) - 1}"
        )
    target = tasks[task_index]
    if control_tasks is None:
        return target, [t for t in tasks if t != target]
    controls = list(control_tasks)
    unknown = [t for t in controls if t not in tasks]
    if unknown or target in controls or not controls:
        raise ConfigError(
            f"method.control_tasks={controls} must be a non-empty list of tasks of the set "
            f"{list(tasks)} other than the target {target}: fix the list or set it to null"
        )
    return target, controls


def target_control_metrics(
    metrics: Mapping[str, Any],
    split: str,
    target: str,
    controls: Sequence[str],
    reference: Reference,
) -> dict[str, float]:
    """Target and control summaries of one evaluated candidate.

    ``target/normalized_top1`` is relative to the fine-tuned accuracy; ``control/top1`` is the
    mean control accuracy and ``control/normalized_top1`` the mean of each control task's
    accuracy over its zero-shot accuracy (as ``wang-kee/LiNeS`` normalizes control tasks).
    """
    if reference.zeroshot is None:
        raise ValueError("target/control metrics need the zero-shot accuracies")
    zs = reference.zeroshot
    acc = {t: metrics[f"{split}/{t}/top1"] for t in [target, *controls]}
    out = {
        "target/top1": acc[target],
        "target/normalized_top1": normalized_accuracy(acc[target], reference.finetuned[target]),
        "target/zeroshot_top1": zs[target],
        "target/finetuned_top1": reference.finetuned[target],
        "target/drop_from_zeroshot": zs[target] - acc[target],
        "target/drop_from_finetuned": reference.finetuned[target] - acc[target],
        "control/top1": _mean(acc[t] for t in controls),
        "control/zeroshot_top1": _mean(zs[t] for t in controls),
        "control/normalized_top1": _mean(normalized_accuracy(acc[t], zs[t]) for t in controls),
    }
    return {f"{split}/{key}": value for key, value in out.items()}


def tradeoff_score(metrics: Mapping[str, Any], split: str, target_weight: float) -> float:
    """``w * target normalized + control normalized`` (LiNeS single-task editing)."""
    return (
        target_weight * metrics[f"{split}/target/normalized_top1"]
        + metrics[f"{split}/control/normalized_top1"]
    )


def meets_control_threshold(metrics: Mapping[str, Any], split: str, threshold: float) -> bool:
    """Mean control top-1 >= ``threshold`` x mean zero-shot control top-1 (task negation)."""
    return metrics[f"{split}/control/top1"] >= threshold * metrics[f"{split}/control/zeroshot_top1"]


def best_index(scores: Sequence[float | None]) -> int | None:
    """Index of the highest score, ties to the first; ``None`` scores are inadmissible."""
    best: int | None = None
    for index, score in enumerate(scores):
        if score is not None and (best is None or score > scores[best]):  # type: ignore[operator]
            best = index
    return best


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)
