"""EMR-merging: elect, mask, rescale (Huang et al., "EMR-Merging: Tuning-Free High-Performance
Model Merging", NeurIPS 2024, arXiv:2405.17461). One unified task vector, and per task a mask
and a rescaler: task t is evaluated with ``theta0 + lambda_t * (M_t * tau_uni)``.

With task vectors tau_1..tau_T, entry by entry:

* Elect: ``gamma = sign(sum_t tau_t)`` with zeros counted as negative (``+1`` if the sum is
  ``> 0``, else ``-1``); ``tau_uni = gamma * max_t |tau_t|`` over the tasks whose entry has the
  elected sign (``tau_t * gamma > 0``; 0 where none has).
* Mask: ``M_t = (tau_t * gamma > 0)``.
* Rescale: ``lambda_t = sum_l mean|tau_t[l]| / sum_l mean|M_t[l] * tau_uni[l]|`` (sums over the
  parameter tensors l of each tensor's mean absolute value).

Reference behaviour: FusionBench (``tanganke/fusion_bench``,
``fusion_bench/method/emr_merging/utils.py``, ``emr_merge`` and ``EMRTaskModulator.apply``: the
per-tensor means summed over tensors, the zero-sum entries electing -1, the task model
``theta0 + tau_uni * M_t * lambda_t``), which follows the authors' ``harveyhuang18/EMR_Merging``.
Deviations: the means and their sums are accumulated in float64 (reference: float32); a task
whose masked unified vector is zero everywhere (``sum_l mean|M_t tau_uni| = 0``, e.g. an
all-zero task vector) gets ``lambda_t = 0`` (reference: 0/0 = NaN); its model is theta0 either
way.

Selection and evaluation: there is no hyperparameter; the one candidate holds one model per
task, each evaluated on its own task (as TALL masks: :class:`taskmerge.merging.base.Candidate`'s
``per_task``). LiNeS is refused: it scales one merged task vector shared by every task, while
EMR's models are per task with their own rescaler (the LiNeS paper does not combine them either).

Memory: one parameter at a time, the tasks streamed: three reads of each task tensor (the sum;
the elected maximum and ``mean|tau_t|``; ``mean|M_t tau_uni|``). Only ``tau_uni`` (one model's
size) is kept; a task's mask is recomputed from its tensor when its model is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import torch

from taskmerge.io.checks import require_keys
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import (
    DerivedStateDict,
    each_parameter_of,
    running_sum,
)
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]


def elect(total: torch.Tensor) -> torch.Tensor:
    """``+1`` where the sum of the task vectors is positive, ``-1`` elsewhere (zeros included)."""
    return torch.where(total > 0, 1, -1).to(total.dtype)


def emr_mask(tau: torch.Tensor, unified: torch.Tensor) -> torch.Tensor:
    """Task mask ``tau_t * gamma > 0``; computed as ``tau_t * tau_uni > 0``, the same wherever
    ``tau_uni`` is nonzero (``sign(tau_uni) = gamma`` there) and irrelevant where it is zero."""
    return (tau * unified) > 0


def emr_unified(
    vectors: Sequence[Vector],
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The unified task vector and each task's rescaler lambda_t, one parameter at a time."""
    count = len(vectors)
    unified: dict[str, torch.Tensor] = {}
    scales = [0.0] * count
    new_scales = [0.0] * count
    for name in each_parameter_of(vectors):
        flag = elect(running_sum(v[name] for v in vectors))
        largest = torch.zeros_like(flag)
        for index, vector in enumerate(vectors):
            tau = vector[name]
            magnitude = (tau * flag).clamp(min=0)  # |tau| where the signs agree, else 0
            largest = torch.maximum(largest, magnitude)
            scales[index] += float(tau.abs().to(torch.float64).mean()) if tau.numel() else 0.0
            del tau, magnitude
        merged = largest.mul_(flag)
        del flag
        for index, vector in enumerate(vectors):
            masked = merged * emr_mask(vector[name], merged)
            new_scales[index] += (
                float(masked.abs().to(torch.float64).mean()) if merged.numel() else 0.0
            )
            del masked
        unified[name] = merged
    rescalers = [s / n if n > 0 else 0.0 for s, n in zip(scales, new_scales, strict=True)]
    return unified, rescalers


def _task_delta(unified: Vector, task_vector: Vector, name: str) -> torch.Tensor | None:
    """``M_t * tau_uni`` of one parameter (None outside the merged vector)."""
    if name not in unified:
        return None
    merged = unified[name]
    return merged * emr_mask(task_vector[name], merged)


@register_method("emr", scaled=False)
class EMRMerging(MergeMethod):
    """EMR-merging (arXiv:2405.17461): task t uses theta0 + lambda_t * M_t * tau_uni; no sweep.

    Elect, mask, rescale (module docstring); no hyperparameter.
    """

    per_task_result = True

    def __init__(self) -> None:
        super().__init__(scaling_coef=1.0)
        self.rescalers: dict[str, float] = {}

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:
        """The unified task vector tau_uni (the rescalers are kept in ``self.rescalers``)."""
        unified, rescalers = emr_unified([tv.vector for tv in task_vectors.values()])
        self.rescalers = dict(zip(task_vectors, rescalers, strict=True))
        return TaskVector(unified)

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        unified = self.merge(task_vectors).vector
        require_keys(list(unified), pretrained)
        per_task = {
            task: DerivedStateDict(
                pretrained,
                partial(_task_delta, unified, task_vectors[task].vector),
                self.rescalers[task],
            )
            for task in task_vectors
        }
        yield Candidate({}, per_task=per_task)  # type: ignore[arg-type]

    def details(self) -> dict[str, Any]:
        """Each task's rescaler lambda_t (after a merge)."""
        return {"emr_rescalers": dict(self.rescalers)} if self.rescalers else {}
