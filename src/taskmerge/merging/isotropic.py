"""Isotropic merging: Iso-C and Iso-CTS (Marczak et al., "No Task Left Behind: Isotropic Model
Merging with Common and Task-Specific Subspaces", ICML 2025, arXiv:2502.04959).

Rules, for each 2-D tensor (``m x n``, ``r = min(m, n)``) of the task vectors tau_1..tau_T:

* Iso-C: ``M = sum_t tau_t = U diag(S) V^T`` (thin SVD, r singular values), merged
  ``tau = mean(S) U V^T``: the sum's singular directions with a flat spectrum.
* Iso-CTS (``common_space_fraction`` f): subspace sizes ``k_c = floor(r f)``, then
  ``k_ts = round((r - k_c) / T) * T``, ``k_c = r - k_ts``, ``n_t = k_ts / T`` (the task-specific
  part divides evenly among the tasks; :func:`subspace_sizes`). The common space is the top k_c
  singular triplets of ``M``; task t adds the top n_t triplets of its part outside the common
  column space, ``tau_t - U_c U_c^T tau_t``. All r columns are concatenated, the stacked
  ``U`` and ``V`` replaced by their orthogonal polar factors, every singular value set to the
  mean of the stacked ones ``s_bar``: ``tau = s_bar U_perp V_perp^T``.
* Every other tensor (1-D, conv kernels, ``text_projection``): the mean of the tau_t.

theta = theta0 + alpha * tau, alpha swept on Val (both methods).

Reference behaviour: FusionBench's port (``tanganke/fusion_bench``,
``fusion_bench/method/isotropic_merging/iso_utils.py``; defaults ``scaling_factor: 1.0``,
``common_space_fraction: 0.8``, ``exclude_keys: null``). Matched: the mean over all r singular
values of the sum (zeros included; a rank-deficient sum keeps the SVD's choice of null
directions in ``U V^T``); Python's ``round`` (halves to even: r = 17, T = 8,
f = 0.8 gives k_c = 13, (17 - 13) / 8 = 0.5 -> 0, so that tensor is Iso-C); ``n_t`` triplets
of the residual's full SVD; the left (column-space) projection for wide matrices too.
Deviations:

* Which tensors: 2-D ones whose name does not contain ``text_projection`` (as TSV-M here and
  the authors' code, built on the TSV code: read in a fork of ``danielm1405/iso-merging``,
  ``src/utils/iso.py``); FusionBench decomposes every
  2-D tensor not listed in ``exclude_keys`` (its CLIP vision checkpoints have no
  ``text_projection``). With a frozen text tower that tensor's tau is zero and both give zero.
* Precision: on the CPU the factors come from float64 eigendecompositions of Gram matrices
  (a float64 full SVD when sigma_k < 1e-5 sigma_1, e.g. rank-deficient sums), the residuals and
  the polar factors are float64 too, and the result is cast to the task vectors' dtype; the
  reference runs float32 SVDs on the accelerator. Same matrices up to float32 rounding. (On the
  CPU, MKL's float32 SVD can fail to converge on the square residuals, whose trailing singular
  values are all at rounding level: seen on ViT-B-32 shapes.) The sum of the tau_t is
  accumulated in their dtype, as the reference does.
* ``k_c = floor(r f)`` exactly (``f`` read as its decimal value); the reference's
  ``int(r * f)`` is one lower where the float product rounds down (r = 100, f = 0.29 -> 28).
* Where rounding up would make ``k_ts > r`` (only when ``k_c < T / 2``, e.g. r = 2, T = 3,
  f = 0), ``k_ts = floor(r / T) T``; the reference gets a negative k_c and wrong slices.
* ``n_t = 0`` (e.g. f = 1): Iso-C of the sum directly; the reference still decomposes each
  residual, keeps none of it, and polar-orthogonalises the already orthonormal U_c, V_c: the
  same matrix.
* The common block is stacked first (reference: last), a consistent permutation of the columns
  of ``U``, ``V`` and the singular values, which leaves ``U_perp V_perp^T`` unchanged.
* Other tensors: ``sum / T`` (reference Iso-CTS: a running mean; equal up to rounding).
* alpha: swept on Val (the paper tunes it on validation data; FusionBench fixes 1.0).

Memory: one parameter at a time, the tasks streamed (``vector[name]`` read one task after the
other; Iso-CTS reads each twice: once for the sum, once for the residuals). The working set per
matrix is the sum and the ``m x r`` / ``r x n`` stacked factors, whatever T.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any, Protocol

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.svd_routes import (
    SvdRoute,
    check_svd_kind,
    computes_in_float64,
    dense_work,
    matmul,
    polar_decomposition,
    polar_factor,
    top_factors,
)
from taskmerge.merging.tensorwise import (
    column,
    each_parameter_of,
    release_memory,
    running_sum,
    shape_of,
)
from taskmerge.merging.tsv import is_svd_target
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]
DEFAULT_COMMON_SPACE_FRACTION = 0.8


class Reiterable(Protocol):
    """Tensors that can be iterated more than once and counted (a list, or :class:`Column`)."""

    def __iter__(self) -> Iterator[torch.Tensor]: ...
    def __len__(self) -> int: ...


class Column:
    """``vector[name]`` of each task, read again on every iteration (one tensor at a time)."""

    def __init__(self, vectors: Sequence[Vector], name: str) -> None:
        self.vectors, self.name = vectors, name

    def __iter__(self) -> Iterator[torch.Tensor]:
        return column(self.vectors, self.name)

    def __len__(self) -> int:
        return len(self.vectors)


def check_fraction(common_space_fraction: float) -> float:
    """The fraction as a float in [0, 1].

    Raises:
        ConfigError: outside [0, 1].
    """
    fraction = float(common_space_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(
            f"method.common_space_fraction must be in [0, 1] (reference 0.8), got {fraction}"
        )
    return fraction


def subspace_sizes(
    rank: int, num_tasks: int, common_space_fraction: float = DEFAULT_COMMON_SPACE_FRACTION
) -> tuple[int, int]:
    """Iso-CTS subspace sizes ``(k_c, n_t)`` of a matrix of rank ``r``: ``k_c + T n_t = r``.

    ``k_c = floor(r f)``, ``k_ts = round((r - k_c) / T) T`` (Python's round, halves to even, as
    the reference; ``floor(r / T) T`` where that would exceed r), ``k_c = r - k_ts``,
    ``n_t = k_ts / T``.
    """
    if num_tasks < 1 or rank < 0:
        raise ValueError(f"subspace_sizes needs rank >= 0 and num_tasks >= 1 ({rank}, {num_tasks})")
    fraction = Fraction(repr(check_fraction(common_space_fraction)))
    common = int(fraction * rank)  # exact floor (Fraction, non-negative)
    specific = round((rank - common) / num_tasks) * num_tasks
    if specific > rank:
        specific = rank // num_tasks * num_tasks
    return rank - specific, specific // num_tasks


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 on the CPU (the Gram route computes in it anyway; a full-SVD fallback then runs
    in float64 too), the tensor's dtype elsewhere."""
    return torch.float64 if computes_in_float64(tensor) else tensor.dtype


def flat_spectrum(matrix: torch.Tensor) -> torch.Tensor:
    """``mean(S) U V^T`` of ``matrix = U diag(S) V^T`` (thin SVD: the mean of r = min(m, n)
    singular values, zeros included), in ``matrix``'s dtype."""
    rank = min(matrix.shape)
    if rank == 0:
        return torch.zeros_like(matrix)
    # mean(S) U V^T = mean(S) times the polar factor: no U and V formed
    polar, sigma = polar_decomposition(matrix.to(_work_dtype(matrix)))
    return polar.mul_(sigma.mean()).to(matrix.dtype)


def iso_c_matrix(taus: Iterable[torch.Tensor]) -> torch.Tensor:
    """Iso-C of one 2-D parameter: the flat-spectrum version of ``sum_t tau_t``.

    Args:
        taus: One ``(m, n)`` matrix per task, consumed one at a time (a generator of lazy reads
            works: only the running sum is kept).
    """
    with dense_work():
        return flat_spectrum(running_sum(taus))


def iso_cts_matrix(
    taus: Reiterable,
    common_space_fraction: float = DEFAULT_COMMON_SPACE_FRACTION,
    route: SvdRoute | None = None,
) -> torch.Tensor:
    """Iso-CTS of one 2-D parameter across tasks.

    Args:
        taus: One ``(m, n)`` matrix per task, iterated twice (the sum, then each task's residual
            outside the common space) and counted with ``len``: a list, or a :class:`Column` of
            lazy vectors (one tensor read at a time).
        common_space_fraction: f, the share of the rank given to the common space before the
            divisibility rule of :func:`subspace_sizes`.
        route: How the top factors are computed (default exact; the randomized route serves
            the tasks' small residual blocks, the common block is too large to sketch).
    """
    with dense_work(route):
        return _iso_cts(taus, common_space_fraction, route)


def _iso_cts(
    taus: Reiterable, common_space_fraction: float, route: SvdRoute | None
) -> torch.Tensor:
    """:func:`iso_cts_matrix` (inside its dense-work context)."""
    count = len(taus)
    total = running_sum(iter(taus))
    rank = min(total.shape)
    k_c, n_t = subspace_sizes(rank, count, common_space_fraction)
    if n_t == 0:  # no task-specific space: Iso-C
        return flat_spectrum(total)
    dtype, work = total.dtype, _work_dtype(total)
    # the stacked factors (r = k_c + T n_t columns, whatever T); float64 on the CPU, where the
    # factors come from float64 Gram matrices
    u_cat = total.new_empty((total.shape[0], rank), dtype=work)
    s_cat = total.new_empty(rank, dtype=work)
    vh_cat = total.new_empty((rank, total.shape[1]), dtype=work)
    if k_c:
        u, s, vh = top_factors(total.to(work), k_c, route)
        u_cat[:, :k_c], s_cat[:k_c], vh_cat[:k_c] = u, s, vh
        del u, s, vh
    del total
    release_memory()
    common = u_cat[:, :k_c]
    seen = 0
    for tau in taus:
        if seen == count:
            raise ValueError(f"iso_cts_matrix got more than {count} matrices on the second pass")
        residual = tau.to(work, copy=True)
        del tau
        if k_c:
            residual -= matmul(common, matmul(common.mT, residual))
        u, s, vh = top_factors(residual, n_t, route)
        columns = slice(k_c + seen * n_t, k_c + (seen + 1) * n_t)
        u_cat[:, columns], s_cat[columns], vh_cat[columns] = u, s, vh
        seen += 1
        del residual, u, s, vh
        release_memory()  # the decomposition's buffers, before the next task's
    if seen != count:
        raise ValueError(f"iso_cts_matrix got {seen} matrices on the second pass, expected {count}")
    merged = matmul(polar_factor(u_cat), polar_factor(vh_cat.mT).mT)
    return merged.mul_(s_cat.mean()).to(dtype)


def _merge_vectors(
    vectors: Sequence[Vector], matrix: Callable[[Column], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``matrix`` for every decomposed tensor, the mean of the tau_t for the others, one
    parameter at a time."""
    merged = {}
    count = len(vectors)
    for name in each_parameter_of(vectors):
        taus = Column(vectors, name)
        if is_svd_target(name, shape_of(vectors[0], name)):
            merged[name] = matrix(taus)
        else:
            merged[name] = running_sum(iter(taus)) / count
    return merged


def iso_c_merge(vectors: Sequence[Vector]) -> dict[str, torch.Tensor]:
    """Iso-C over whole task vectors (before the coefficient)."""
    return _merge_vectors(vectors, iso_c_matrix)


def iso_cts_merge(
    vectors: Sequence[Vector],
    common_space_fraction: float = DEFAULT_COMMON_SPACE_FRACTION,
    route: SvdRoute | None = None,
) -> dict[str, torch.Tensor]:
    """Iso-CTS over whole task vectors (before the coefficient)."""
    check_fraction(common_space_fraction)
    return _merge_vectors(vectors, lambda taus: iso_cts_matrix(taus, common_space_fraction, route))


# --------------------------------------------------------------------------- method classes
@register_method("iso_c", scaled=True, lines="multitask")
class IsoC(MergeMethod):
    """Iso-C (arXiv:2502.04959): theta0 + alpha * mean(S) U V^T of sum_t tau_t, alpha swept.

    Args:
        scaling_coef: Fixed alpha, or None to sweep ``grid`` (FusionBench: 1.0).
        grid: Alphas tried on Val.
    """

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        with dense_work():  # one context for the whole pass (reads included)
            return TaskVector(iso_c_merge([tv.vector for tv in task_vectors.values()]))


@register_method("iso_cts", scaled=True, lines="multitask")
class IsoCTS(MergeMethod):
    """Iso-CTS (arXiv:2502.04959): common + task-specific subspaces, flat spectrum, alpha swept.

    Args:
        common_space_fraction: Share of each matrix's rank for the common space (reference 0.8;
            1.0 is Iso-C).
        scaling_coef: Fixed alpha, or None to sweep ``grid`` (FusionBench: 1.0).
        grid: Alphas tried on Val.
        svd: ``"exact"`` (default) or ``"randomized"`` (:mod:`taskmerge.merging.svd_routes`).
    """

    def __init__(
        self,
        common_space_fraction: float = DEFAULT_COMMON_SPACE_FRACTION,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
        svd: str = "exact",
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        self.common_space_fraction = check_fraction(common_space_fraction)
        self.route = SvdRoute(check_svd_kind(svd))

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        with dense_work(self.route):  # one context for the whole pass (reads included)
            return TaskVector(iso_cts_merge(vectors, self.common_space_fraction, self.route))

    def details(self) -> dict[str, Any]:
        """With ``svd=randomized``: which route each matrix took."""
        return self.route.details()
