"""Target-vs-control metrics and criteria: single-task editing with LiNeS (target vs control
trade-off) and task negation (forget the target while the control tasks stay near their
zero-shot accuracy).

Every function takes a :class:`~taskmerge.metrics.SplitMetrics` or the derived metrics it returns
(``target/top1``, ``control/normalized_top1``, ...: names without the split, which
:mod:`taskmerge.experiment.records` adds when writing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from taskmerge.errors import ConfigError
from taskmerge.metrics import Reference, SplitMetrics, mean, normalized_accuracy


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
    metrics: SplitMetrics, target: str, controls: Sequence[str], reference: Reference
) -> dict[str, float]:
    """Target and control summaries of one evaluated candidate.

    ``target/normalized_top1`` is relative to the fine-tuned accuracy; ``control/top1`` is the
    mean control accuracy and ``control/normalized_top1`` the mean of each control task's
    accuracy over its zero-shot accuracy (as ``wang-kee/LiNeS`` normalizes control tasks).
    """
    if reference.zeroshot is None:
        raise ValueError("target/control metrics need the zero-shot accuracies")
    zs, acc, tuned = reference.zeroshot, metrics.top1, reference.finetuned
    return {
        "target/top1": acc[target],
        "target/normalized_top1": normalized_accuracy(acc[target], tuned[target]),
        "target/zeroshot_top1": zs[target],
        "target/finetuned_top1": tuned[target],
        "target/drop_from_zeroshot": zs[target] - acc[target],
        "target/drop_from_finetuned": tuned[target] - acc[target],
        "control/top1": mean([acc[t] for t in controls]),
        "control/zeroshot_top1": mean([zs[t] for t in controls]),
        "control/normalized_top1": mean([normalized_accuracy(acc[t], zs[t]) for t in controls]),
    }


def tradeoff_score(derived: Mapping[str, float], target_weight: float) -> float:
    """``w * target normalized + control normalized`` (LiNeS single-task editing)."""
    return target_weight * derived["target/normalized_top1"] + derived["control/normalized_top1"]


def meets_control_threshold(derived: Mapping[str, float], threshold: float) -> bool:
    """Mean control top-1 >= ``threshold`` x mean zero-shot control top-1 (task negation)."""
    return derived["control/top1"] >= threshold * derived["control/zeroshot_top1"]
