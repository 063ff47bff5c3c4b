"""MagMax: per entry, the task vector value of largest magnitude (Marczak et al., "MagMax:
Leveraging Model Merging for Seamless Continual Learning", ECCV 2024, arXiv:2407.06322).

``tau_max[j] = tau_{t*}[j]`` with ``t* = argmax_t |tau_t[j]|``, then theta0 + alpha * tau_max.
Read from FusionBench (``tanganke/fusion_bench`` ``fusion_bench/method/magmax/magmax.py``, which
follows the authors' ``danielm1405/magmax`` ``merge_max_abs``), matched: the tasks are folded in
order with ``|tau_t| >= |running|`` replacing the running value, so on equal magnitudes the LATER
task wins (e.g. +0.5 then -0.5 gives -0.5). The authors' 8-dataset script uses a fixed
``scaling_coef = 0.5`` (FusionBench's default ``scaling_factor``); here alpha is swept on Val
like every scaled method (set ``scaling_coef: 0.5`` for the reference's value).

Memory: one running buffer per parameter, the tasks read one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from taskmerge.merging.base import MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import Vector, each_parameter_of
from taskmerge.vectors.task_vector import TaskVector


def max_magnitude(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Entrywise value of largest magnitude, later tensors winning ties (consumed once)."""
    best: torch.Tensor | None = None
    for tensor in tensors:
        if best is None:
            best = tensor.clone()
            continue
        best = torch.where(tensor.abs() >= best.abs(), tensor, best)
    if best is None:
        raise ValueError("max_magnitude of no tensors")
    return best


def magmax_merge(vectors: Sequence[Vector]) -> dict[str, torch.Tensor]:
    """MagMax of task vectors (parameter name -> tensor), tensor by tensor."""
    return {name: max_magnitude(v[name] for v in vectors) for name in each_parameter_of(vectors)}


@register_method("magmax", scaled=True, lines="multitask")
class MagMax(MergeMethod):
    """MagMax (arXiv:2407.06322): theta0 + alpha * (per entry, the largest-magnitude tau_t).

    Args:
        scaling_coef: Fixed alpha (the authors' script: 0.5), or None to sweep ``grid``.
        grid: Alphas tried on Val.
    """

    def __init__(
        self, scaling_coef: float | None = None, grid: Sequence[float] | None = None
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return TaskVector(magmax_merge([tv.vector for tv in task_vectors.values()]))
