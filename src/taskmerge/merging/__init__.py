"""Merge methods: pure functions over task vectors plus thin classes whose arguments are the
YAML keys of ``config/method/<name>.yaml``.

Each method class declares itself with :func:`~taskmerge.merging.registry.register_method`;
every module of this package is discovered by the registry, so a new method needs no line here
(the names below are re-exported for convenience).
"""

from taskmerge.merging.arithmetic import (
    SingleTask,
    TaskArithmetic,
    WeightAverage,
    ZeroShot,
    task_arithmetic,
    weight_average,
)
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.merging.lines import LiNeS, with_lines
from taskmerge.merging.mask_methods import Consensus, MagnitudeMasking, TallMask
from taskmerge.merging.negation import TaskNegation
from taskmerge.merging.registry import method_names, method_spec, register_method
from taskmerge.merging.ties import Ties, ties_merge
from taskmerge.merging.tsv import TSVCompress, TSVMerge, tsv_merge

__all__ = [
    "Candidate",
    "Consensus",
    "LiNeS",
    "MagnitudeMasking",
    "MergeMethod",
    "SingleTask",
    "TSVCompress",
    "TSVMerge",
    "TallMask",
    "TaskArithmetic",
    "TaskNegation",
    "Ties",
    "WeightAverage",
    "ZeroShot",
    "method_names",
    "method_spec",
    "register_method",
    "task_arithmetic",
    "ties_merge",
    "tsv_merge",
    "weight_average",
    "with_lines",
]
