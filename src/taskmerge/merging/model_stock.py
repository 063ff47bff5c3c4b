"""Model Stock (Jang et al., "Model Stock: All we need is just a few fine-tuned models", ECCV
2024, arXiv:2403.19522): the fine-tuned average pulled towards the pretrained anchor, per layer,
by the angle between the fine-tuned models.

For each parameter tensor, with ``T`` task vectors tau_t (fine-tuned minus pretrained):

* ``cos_ij = <tau_i, tau_j> / (||tau_i|| ||tau_j|| + eps)``, clamped to [-1, 1], for every pair
  ``i < j``; ``phi`` is the mean of the pairwise angles ``acos(cos_ij)``;
* ``t = T cos(phi) / ((T - 1) cos(phi) + 1 + eps)`` (the paper's eq. for k models);
* ``theta = t * mean_t(theta_t) + (1 - t) * theta0 = theta0 + t * mean_t(tau_t)``.

Reference behaviour: FusionBench (``tanganke/fusion_bench``,
``fusion_bench/method/model_stock/model_stock.py``): ``eps = 1e-8`` in both places, the angle
averaged over the pairs (in degrees there, in radians here: the same mean), one ratio per
parameter tensor, parameters in ``ignore_keys`` take the plain average (its default
``ignore_keys`` are text-tower names, which an image encoder does not have). At least two
models (the reference raises otherwise); the dot products and squared norms are float32 sums
and the angle arithmetic float64, as there. Deviation: the merge is done on the task vectors
(``theta0 + t mean tau``; reference: ``t theta_avg + (1 - t) theta0`` on the weights), equal up
to float32 rounding.

No coefficient is swept (the ratio is the method); LiNeS composes (it scales the merged vector
per block, alpha from the norms, beta = 1, as for ``average``).

Memory: one parameter at a time. The pairwise angles need every pair of task tensors of that
parameter: task i is read once and kept while tasks j > i are read one after the other
(``T + T (T - 1) / 2`` reads of one tensor per parameter, at most two task tensors alive), so
memory does not grow with T; the reads grow quadratically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import each_parameter_of
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]
#: FusionBench's ``EPS`` (in the cosine's denominator and the ratio's).
EPS = 1e-8


def interpolation_ratio(mean_angle: float, num_models: int) -> float:
    """``t = k cos(phi) / ((k - 1) cos(phi) + 1 + eps)`` (arXiv:2403.19522, k fine-tuned models)."""
    cos = math.cos(mean_angle)
    return num_models * cos / ((num_models - 1) * cos + 1 + EPS)


def mean_pairwise_angle(vectors: Sequence[Vector], name: str) -> float:
    """The mean over pairs ``i < j`` of the angle (radians) between ``tau_i`` and ``tau_j`` of one
    parameter; task i is kept while the tasks after it are read one at a time."""
    count = len(vectors)
    if count < 2:
        raise ValueError("Model Stock needs at least two task vectors")
    squares: list[float] = [0.0] * count
    dots: dict[tuple[int, int], float] = {}
    for i in range(count):
        first = _flat32(vectors[i][name])
        squares[i] = float(torch.dot(first, first))
        for j in range(i + 1, count):
            dots[i, j] = float(torch.dot(first, _flat32(vectors[j][name])))
        del first
    total = 0.0
    for (i, j), dot in dots.items():
        cos = dot / (math.sqrt(squares[i] * squares[j]) + EPS)
        total += math.acos(min(1.0, max(-1.0, cos)))
    return total / len(dots)


def _flat32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().reshape(-1).to(torch.float32)


def model_stock_tensor(vectors: Sequence[Vector], name: str) -> tuple[torch.Tensor, float]:
    """``t * mean_t(tau_t)`` of one parameter and its ratio ``t``."""
    ratio = interpolation_ratio(mean_pairwise_angle(vectors, name), len(vectors))
    return _mean(vectors, name).mul_(ratio), ratio


def _mean(vectors: Sequence[Vector], name: str) -> torch.Tensor:
    total: torch.Tensor | None = None
    for vector in vectors:
        tau = vector[name]
        total = tau.clone() if total is None else total.add_(tau)
        del tau
    assert total is not None
    return total.div_(len(vectors))


def model_stock_merge(
    vectors: Sequence[Vector], ignore_keys: Sequence[str] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Model Stock over whole task vectors: the merged vector and each parameter's ratio
    (parameters in ``ignore_keys``: the plain mean, no ratio)."""
    merged: dict[str, torch.Tensor] = {}
    ratios: dict[str, float] = {}
    ignored = set(ignore_keys)
    for name in each_parameter_of(vectors):
        if name in ignored:
            merged[name] = _mean(vectors, name)
        else:
            merged[name], ratios[name] = model_stock_tensor(vectors, name)
    return merged, ratios


@register_method("model_stock", scaled=False, lines="multitask")
class ModelStock(MergeMethod):
    """Model Stock (arXiv:2403.19522): theta0 + t_l mean(tau), t_l from the angle between tasks.

    Args:
        ignore_keys: Parameter names merged by the plain average, without a ratio (FusionBench's
            ``ignore_keys``; default none).
    """

    def __init__(self, ignore_keys: Sequence[str] | None = None) -> None:
        super().__init__(scaling_coef=1.0)
        self.ignore_keys = [str(key) for key in ignore_keys or ()]
        self.ratios: dict[str, float] = {}

    def bind(
        self, encoder: nn.Module | None, tasks: Sequence[str], *, mask_dir: Path | None = None
    ) -> MergeMethod:
        """Model Stock needs at least two fine-tuned models."""
        _check_two(len(tasks))
        return self

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        _check_two(len(task_vectors))
        vectors = [tv.vector for tv in task_vectors.values()]
        merged, self.ratios = model_stock_merge(vectors, self.ignore_keys)
        return TaskVector(merged)

    def details(self) -> dict:
        """The per-parameter interpolation ratios t (after a merge)."""
        return {"model_stock_ratios": dict(self.ratios)} if self.ratios else {}


def _check_two(count: int) -> None:
    if count < 2:
        raise ConfigError(
            f"method model_stock merges at least 2 fine-tuned models, got {count}: add tasks"
        )
