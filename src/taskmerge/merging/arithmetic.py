"""Zero-shot, single-task, task arithmetic and weight averaging."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from taskmerge.errors import ConfigError
from taskmerge.merging.base import Candidate, MergeMethod, check_percentage
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import each_parameter_of, running_sum
from taskmerge.vectors.task_vector import TaskVector


def task_arithmetic(task_vectors: Sequence[TaskVector]) -> TaskVector:
    """Sum of the task vectors (Ilharco et al., arXiv:2212.04089), tensor by tensor, streaming
    over the tasks (in memory or lazy) in order."""
    vectors = [tv.vector for tv in task_vectors]
    return TaskVector(
        {name: running_sum(v[name] for v in vectors) for name in each_parameter_of(vectors)}
    )


def weight_average(task_vectors: Sequence[TaskVector]) -> TaskVector:
    """Mean of the task vectors: theta0 + mean(tau) is the average of the fine-tuned weights."""
    summed = task_arithmetic(task_vectors)
    scale = 1.0 / len(task_vectors)
    return TaskVector({name: tensor.mul_(scale) for name, tensor in summed.vector.items()})


@register_method("zeroshot", scaled=False)
class ZeroShot(MergeMethod):
    """The pretrained encoder itself."""

    def __init__(self) -> None:
        super().__init__(scaling_coef=0.0)

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        yield Candidate({}, dict(pretrained))


@register_method("single_task", scaled=False, lines="editing")
class SingleTask(MergeMethod):
    """The fine-tuned encoder of one task (``task_index`` into the task list), on every task."""

    def __init__(self, task_index: int = 0, scaling_coef: float = 1.0) -> None:
        super().__init__(scaling_coef=scaling_coef)
        self.task_index = task_index

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        names = list(task_vectors)
        if not 0 <= self.task_index < len(names):
            raise ConfigError(
                f"method.task_index={self.task_index} is out of range for {len(names)} tasks"
            )
        return task_vectors[names[self.task_index]]


@register_method("sum", scaled=True, lines="multitask")
class TaskArithmetic(MergeMethod):
    """theta0 + alpha * sum_t tau_t, alpha swept on Val (arXiv:2212.04089).

    Args:
        k: Keep each task's top-``k``% magnitudes (over its whole vector, ties kept) before
            summing, as the ``k`` of ``nik-dim/tall_masks``' ``sum.yaml``; 100 (default): no trim.
        scaling_coef: Fixed alpha, or None to sweep ``grid``.
        grid: Alphas tried on Val.
    """

    def __init__(
        self, k: float = 100, scaling_coef: float | None = None, grid: Sequence[float] | None = None
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        self.k = check_percentage("k", k)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = list(task_vectors.values())
        if self.k >= 100:
            return task_arithmetic(vectors)
        from taskmerge.merging.masks import multitask_vector  # here: keeps the registry order

        return TaskVector(multitask_vector([tv.vector for tv in vectors], k=self.k))


@register_method("average", scaled=False, lines="multitask")
class WeightAverage(MergeMethod):
    """theta0 + mean_t tau_t (model soups / weight averaging), no sweep."""

    def __init__(self) -> None:
        super().__init__(scaling_coef=1.0)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return weight_average(list(task_vectors.values()))
