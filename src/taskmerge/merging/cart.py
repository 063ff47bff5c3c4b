"""CART: centered arithmetic with rank-reduced task vectors (Choi et al., "Revisiting Weight
Averaging for Model Merging", arXiv:2412.12153).

The task vectors are re-centred on their average, the centred ones truncated to a low rank and
added back to the weight average:

    theta = theta_avg + lambda * sum_t SVD_r(tau_t - mean_s tau_s),   theta_avg = theta0 + mean tau

``SVD_r`` keeps the top ``r = max(1, int(initial_rank_ratio * min(m, n)))`` singular triplets
of each centred ``m x n`` matrix of the attention and MLP layers (names containing ``attn`` or
``mlp``, not ``ln`` or ``bias``); for every other parameter the centred vectors sum to zero, so
it is the average.

Reference behaviour: the authors' ``JH-GEECS/CART`` (``src/merging.py``,
``StaticMergeModule._merge_weights("CART")`` and ``_get_truncated_task_vectors``): the name rule,
``max(1, int(ratio * dim))``, ``ratio = 0``: the average, ``ratio = 1``: the whole centred
vectors (so again the average). Their configs fix ``prior`` (lambda) and
``initial_rank_ratio`` per benchmark: 2.0 / 0.12 (ViT-B/32, 8 tasks), 1.5 / 0.16 (14),
1.9 / 0.32 (20). Here lambda is ``scaling_coef``, swept on Val over a grid through those values;
``initial_rank_ratio`` defaults to the 8-task 0.12. Deviations: the SVDs are float64 (from the
Gram matrix on the CPU, :func:`taskmerge.merging.svd_routes.top_factors`; reference: float32
``torch.linalg.svd``), the same truncation up to float32 rounding where the r-th and
(r+1)-th singular values differ; the non-decomposed parameters are the average exactly
(reference: average plus the float32 rounding residue of a sum of centred vectors).

LiNeS is refused: CART's coefficient scales only the centred low-rank part, on top of an
unscaled average, while LiNeS' multi-task rule scales one merged vector per layer (alpha from
the norms); neither paper defines the combination.

Memory: one parameter at a time, the tasks streamed twice (the mean, then each task's centred
matrix and its SVD); kept are the mean and the sum of the low-rank parts, each one model's
size. The Val sweep is affine in lambda (theta0 + 1 * mean + lambda * low-rank sum), so the
linearized evaluator scores the whole grid in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import AffineFamily, GridSource, MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.svd_routes import SvdRoute, check_svd_kind, dense_work, matmul, top_factors
from taskmerge.merging.tensorwise import (
    DerivedStateDict,
    each_parameter_of,
    release_memory,
    running_sum,
    shape_of,
)
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]
#: The authors' 8-task ViT-B/32 config (``configs/CART/ViT-b-32_8_CART.yaml``).
DEFAULT_RANK_RATIO = 0.12


def is_cart_target(name: str, shape: torch.Size) -> bool:
    """Whether CART truncates this parameter: an ``attn`` / ``mlp`` matrix, not a norm or bias."""
    named = ("attn" in name or "mlp" in name) and not ("ln" in name or "bias" in name)
    return named and len(shape) == 2


def cart_rank(shape: Sequence[int], initial_rank_ratio: float) -> int:
    """``max(1, int(ratio * min(m, n)))`` (0 for ratio 0: nothing kept)."""
    if initial_rank_ratio == 0:
        return 0
    return max(1, int(initial_rank_ratio * min(shape)))


def low_rank(matrix: torch.Tensor, rank: int, route: SvdRoute | None = None) -> torch.Tensor:
    """The best rank-``rank`` approximation of ``matrix`` (float64, the whole matrix when
    ``rank`` is its full rank)."""
    work = matrix.to(torch.float64)
    if rank >= min(work.shape):
        return work
    if rank == 0:
        return torch.zeros_like(work)
    with dense_work(route):
        u, s, vh = top_factors(work, rank, route)
        return matmul(u * s, vh)


def cart_tensors(
    vectors: Sequence[Vector],
    initial_rank_ratio: float = DEFAULT_RANK_RATIO,
    route: SvdRoute | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(mean_t tau_t, sum_t SVD_r(tau_t - mean))`` for every parameter (the second only for
    the truncated ones: the others' centred sum is zero), one parameter at a time."""
    count = len(vectors)
    means: dict[str, torch.Tensor] = {}
    ranked: dict[str, torch.Tensor] = {}
    for name in each_parameter_of(vectors):
        mean = running_sum(v[name] for v in vectors).div_(count)
        means[name] = mean
        shape = shape_of(vectors[0], name)
        if not is_cart_target(name, shape):
            continue
        rank = cart_rank(shape, initial_rank_ratio)
        total = torch.zeros(shape, dtype=torch.float64, device=mean.device)
        if 0 < rank < min(shape):  # rank 0 keeps nothing; full rank: the centred sum, zero
            for vector in vectors:
                centred = vector[name].to(torch.float64) - mean
                total.add_(low_rank(centred, rank, route))
                del centred
                release_memory()
        ranked[name] = total.to(mean.dtype)
    return means, ranked


def check_rank_ratio(value: float) -> float:
    """The ratio in [0, 1], or a one-line error."""
    ratio = float(value)
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(
            f"method.initial_rank_ratio={value} must be in [0, 1] (the share of each matrix's "
            "rank kept; authors: 0.12 for 8 tasks, 0.16 for 14, 0.32 for 20)"
        )
    return ratio


def _delta(means: Vector, ranked: Vector, coef: float, name: str) -> torch.Tensor | None:
    if name not in means:
        return None
    if name not in ranked:
        return means[name]
    return means[name] + coef * ranked[name]


@register_method("cart", scaled=True)
class CART(MergeMethod):
    """CART (arXiv:2412.12153): theta0 + mean(tau) + lambda * sum_t SVD_r(tau_t - mean(tau)).

    Args:
        initial_rank_ratio: Share of each matrix's rank kept (authors: 0.12 / 0.16 / 0.32 at
            8 / 14 / 20 tasks).
        scaling_coef: lambda (the authors' ``prior``), or None to sweep ``grid``.
        grid: lambdas tried on Val.
        svd: ``"exact"`` (default) or ``"randomized"`` (:mod:`taskmerge.merging.svd_routes`).
    """

    def __init__(
        self,
        initial_rank_ratio: float = DEFAULT_RANK_RATIO,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
        svd: str = "exact",
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        self.initial_rank_ratio = check_rank_ratio(initial_rank_ratio)
        self.route = SvdRoute(check_svd_kind(svd))

    def details(self) -> dict[str, Any]:
        """With ``svd=randomized``: which route each matrix took."""
        return self.route.details()

    def parts(
        self, task_vectors: Mapping[str, TaskVector]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The average task vector and the sum of the centred low-rank ones."""
        vectors = [tv.vector for tv in task_vectors.values()]
        with dense_work(self.route):  # one context for the whole pass (reads included)
            return cart_tensors(vectors, self.initial_rank_ratio, self.route)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:
        """``mean + lambda * low-rank sum`` at the first coefficient (the fixed one)."""
        means, ranked = self.parts(task_vectors)
        coef = self.coefficients()[0]
        return TaskVector({name: _delta(means, ranked, coef, name) for name in means})

    def affine_family(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> AffineFamily:
        """theta0 + 1 * mean + lambda * low-rank sum, one point per lambda."""
        means, ranked = self.parts(task_vectors)
        points = [({"scaling_coef": c}, (1.0, c)) for c in self.coefficients()]
        return AffineFamily([means, ranked], points)

    def grid_source(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> GridSource:
        """theta0 + mean + lambda * low-rank sum, any lambda of the grid on request."""
        means, ranked = self.parts(task_vectors)
        coefs = self.coefficients()

        def weights(index: int) -> DerivedStateDict:
            return DerivedStateDict(pretrained, partial(_delta, means, ranked, coefs[index]))

        return GridSource([{"scaling_coef": coef} for coef in coefs], weights)
