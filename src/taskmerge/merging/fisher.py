"""Fisher merging: a per-parameter average weighted by each model's diagonal Fisher (Matena &
Raffel, NeurIPS 2022, arXiv:2111.09832).

``theta = sum_t F_t theta_t / sum_t F_t`` elementwise, i.e. ``theta0 + sum_t F_t tau_t /
sum_t F_t``, with ``F_t = mean_x sum_y p_t(y|x) (d log p_t(y|x) / d theta)^2`` from per-example
gradients of the log-likelihood on ``num_samples`` training images of task t (the expectation
over y exact, as the paper; FusionBench ``method/fisher_merging`` squares batch gradients of
``sum_y sqrt(p_y) log p_y`` instead). As FusionBench (``clip_fisher_merging.yaml``): each F_t
is divided by its global L2 norm (``normalize``) and ``minimal_fisher_weight`` (1e-6) is added,
so parameters no task is sensitive to are averaged.

Memory: the Fishers are streamed per parameter over the tasks (from their cache files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.data_methods import DataMergeMethod, finetuned_weights
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import each_parameter, parameter_names
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]


def fisher_norm(fisher: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """The global L2 norm of a Fisher over ``names``, one tensor at a time."""
    return math.sqrt(sum(float(fisher[n].double().pow(2).sum()) for n in names if n in fisher))


def fisher_merge(
    vectors: Sequence[Vector],
    fishers: Sequence[Mapping[str, torch.Tensor]],
    minimal_weight: float = 1e-6,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """``sum_t w_t tau_t / sum_t w_t`` per entry, ``w_t = F_t (/ ||F_t||) + minimal_weight``
    (a name missing from a Fisher has weight ``minimal_weight`` there)."""
    names = parameter_names(vectors)
    scales = [1.0 / max(fisher_norm(f, names), 1e-30) if normalize else 1.0 for f in fishers]
    merged: dict[str, torch.Tensor] = {}
    for name in each_parameter(names):
        numerator = denominator = None
        for vector, fisher, scale in zip(vectors, fishers, scales, strict=True):
            tau = vector[name].double()
            weight = (
                fisher[name].double() * scale + minimal_weight
                if name in fisher
                else torch.full_like(tau, minimal_weight)
            )
            numerator = weight * tau if numerator is None else numerator.add_(weight * tau)
            denominator = weight if denominator is None else denominator.add_(weight)
        merged[name] = (numerator / denominator).float()
    return merged


@register_method("fisher", scaled=False)
class FisherMerging(DataMergeMethod):
    """Fisher merging (arXiv:2111.09832): tau averaged per entry, weighted by diagonal Fishers.

    Each model's diagonal Fisher comes from per-example log-likelihood gradients on training
    images.

    Args:
        num_samples: Training images per task (FusionBench 256).
        minimal_fisher_weight: Added to every Fisher entry (FusionBench 1e-6).
        normalize: Divide each Fisher by its global L2 norm first (FusionBench true).
    """

    def __init__(
        self, num_samples: int = 256, minimal_fisher_weight: float = 1e-6, normalize: bool = True
    ) -> None:
        super().__init__()
        if num_samples < 1 or minimal_fisher_weight <= 0:
            raise ConfigError(
                f"method.num_samples={num_samples}, minimal_fisher_weight="
                f"{minimal_fisher_weight}: use num_samples >= 1 and minimal_fisher_weight > 0"
            )
        self.num_samples = num_samples
        self.minimal_fisher_weight, self.normalize = float(minimal_fisher_weight), normalize

    def merge_with_data(
        self, pretrained: Mapping[str, torch.Tensor], task_vectors: Mapping[str, TaskVector]
    ) -> TaskVector:
        """Each task's diagonal Fisher (cached with its checkpoint), then the weighted mean."""
        data = self.require_data()
        fishers = [
            data.fisher_diagonal(task, finetuned_weights(pretrained, tv.vector), self.num_samples)
            for task, tv in task_vectors.items()
        ]
        vectors = [tv.vector for tv in task_vectors.values()]
        return TaskVector(
            fisher_merge(vectors, fishers, self.minimal_fisher_weight, self.normalize)
        )

    def details(self) -> dict[str, Any]:  # noqa: D102
        return {"num_samples": self.num_samples, "data": "train"}
