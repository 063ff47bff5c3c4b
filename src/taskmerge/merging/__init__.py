"""Merge methods: pure functions over task vectors plus thin classes whose arguments are the
YAML keys of ``config/method/<name>.yaml``."""

from taskmerge.merging.arithmetic import (
    SingleTask,
    TaskArithmetic,
    WeightAverage,
    ZeroShot,
    task_arithmetic,
    weight_average,
)
from taskmerge.merging.base import Candidate, MergeMethod

__all__ = [
    "Candidate",
    "MergeMethod",
    "SingleTask",
    "TaskArithmetic",
    "WeightAverage",
    "ZeroShot",
    "task_arithmetic",
    "weight_average",
]
