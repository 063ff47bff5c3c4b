"""Model Breadcrumbs: per layer, drop each task vector's largest outliers and its small entries,
then sum (Davari & Belilovsky, ECCV 2024, arXiv:2312.06795).

For every tensor of every task vector (``n`` entries, sorted by ``|tau|`` ascending), the
``n_top = int(gamma * n)`` largest magnitudes (outliers) and the ``n_bot`` smallest are zeroed,
so that ``target = int(density * n)`` entries survive: ``n_bot = n - target - n_top`` (when
that is negative, fewer outliers are removed: ``n_top += n_bot; n_bot = 0``). The masked
vectors are summed and theta0 + alpha * sum, alpha swept on Val.

Read from mergekit (``arcee-ai/mergekit`` ``mergekit/sparsify.py`` ``magnitude_outliers``;
``breadcrumbs`` = that sparsification + a weighted sum, no sign consensus, no normalisation and
no rescaling), matched in its parametrisation (``density`` kept, ``gamma`` top fraction removed,
mergekit's default ``gamma = 0.01``; ``density >= 1`` leaves the tensor untouched; the kept
band is ``indices[n_bot : n_bot + target]``, as mergekit 0.1.5 on PyPI). Two notes:

* ``n_top == 0`` (``gamma * n < 1``, e.g. a small bias) keeps the top entries, as mergekit
  0.1.5; an older revision of ``sparsify.py`` sliced ``indices[n_bot:-n_top]``, empty for
  ``n_top == 0``, which zeroed such tensors.
* Equal magnitudes are ordered by position (a stable sort); mergekit's unstable sort leaves
  the choice among ties to the sort kernel. Without ties both give the same mask.

Default ``density = 0.1`` (keep 10%, i.e. drop the bottom 89% and the top 1%), the sparse
regime the paper studies; mergekit has no default density for it (1.0 means no masking).
LiNeS composes (it scales the merged vector).

Memory: one tensor of one task (and its sort indices) at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import Vector, each_parameter_of, running_sum
from taskmerge.vectors.task_vector import TaskVector


def kept_range(numel: int, density: float, gamma: float) -> tuple[int, int]:
    """``(n_bot, n_top)``: how many of the smallest and of the largest magnitudes are dropped."""
    target, n_top = int(density * numel), int(gamma * numel)
    n_bot = numel - target - n_top
    if n_bot < 0:
        n_top, n_bot = n_top + n_bot, 0
    return n_bot, n_top


def breadcrumb_tensor(tau: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """One tensor with its bottom and top magnitudes zeroed (a new tensor, or ``tau`` itself
    when ``density >= 1``)."""
    if density >= 1:
        return tau
    flat = tau.reshape(-1)
    n_bot, n_top = kept_range(flat.numel(), density, gamma)
    magnitude = flat.abs()
    if magnitude.dtype not in (torch.float32, torch.float64):
        magnitude = magnitude.float()
    order = torch.sort(magnitude, stable=True).indices
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=tau.device)
    keep[order[n_bot : flat.numel() - n_top]] = True
    return (flat * keep).reshape(tau.shape)


def breadcrumbs_merge(
    vectors: Sequence[Vector], density: float = 0.1, gamma: float = 0.01
) -> dict[str, torch.Tensor]:
    """Sum of the breadcrumb-masked task vectors, tensor by tensor."""
    return {
        name: running_sum(breadcrumb_tensor(v[name], density, gamma) for v in vectors)
        for name in each_parameter_of(vectors)
    }


@register_method("breadcrumbs", scaled=True, lines="multitask")
class Breadcrumbs(MergeMethod):
    """Model Breadcrumbs (arXiv:2312.06795): theta0 + alpha * sum_t (tau_t masked per layer).

    Each tensor's mask drops its top ``gamma`` outliers and its small entries.

    Args:
        density: Fraction of each tensor's entries kept (default 0.1).
        gamma: Fraction of each tensor's largest magnitudes dropped (mergekit default 0.01).
        scaling_coef: Fixed alpha, or None to sweep ``grid``.
        grid: Alphas tried on Val.
    """

    def __init__(
        self,
        density: float = 0.1,
        gamma: float = 0.01,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        if not 0 < float(density) <= 1:
            raise ConfigError(f"method.density={density} must be a fraction in (0, 1]")
        if not 0 <= float(gamma) < 1:  # density + gamma > 1 removes fewer outliers (mergekit)
            raise ConfigError(f"method.gamma={gamma} must be a fraction in [0, 1)")
        self.density, self.gamma = float(density), float(gamma)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        return TaskVector(breadcrumbs_merge(vectors, self.density, self.gamma))
