"""Top singular triplets and polar factors for the SVD methods (TSV-M, TSV-C, Iso-CTS, CART).

Two routes, chosen by ``method.svd``:

* ``exact`` (default): the top-r factors of a float32 ``(m, n)`` matrix come from the float64
  eigendecomposition of its smaller Gram matrix (``X^T X = V S^2 V^T``, ``U = X V / S``): more
  accurate than a float32 SVD and faster at ViT sizes. Where r is at most 1/6 of the Gram
  matrix's size (from 512 on), only the top r eigenpairs are computed (LAPACK's MRRR,
  ``dsyevr``). On the CPU the Gram matrix (``dsyrk``: one triangle, half the multiply-adds), the
  eigenpairs and the products all run through scipy's BLAS and LAPACK, with torch on one thread
  meanwhile (:mod:`taskmerge.merging.float64_kernels`, :func:`dense_work`). The same float64
  route runs on a CUDA device (``merge_device=cuda``) through torch. A full SVD remains for
  (numerically) rank-deficient matrices, whose null directions the Gram matrix does not fix,
  and for other devices.
* ``randomized``: a randomized range finder with power iterations (Halko, Martinsson and Tropp,
  SIAM Review 2011, algorithms 4.4 and 5.1), in float64, seeded (the same factors on every run),
  with ``r + max(10, r / 2)`` sketch columns, and an a-posteriori check after every power
  iteration. With ``Q`` the sketch's basis, ``Q^T X = W diag(s) Z^T``, ``U = Q W``, ``V = Z``,
  the residual of the kept triplets is ``R = X V_r - U_r diag(s_r)`` (the other residual,
  ``X^T U_r - V_r diag(s_r)``, is zero by construction). The route accepts the factors when

      ( ||R||_F + sqrt(2) s_1 ||R||_F / (s_r - s_(r+1)) ) / ||s_r||_2  <=  1e-9,

  Wedin's bound on the distance between the computed and the exact rank-r truncation (the
  sin-theta bound on the right singular subspace, scaled by ``s_1``, plus the residual itself),
  relative to the truncation's norm, with the gap taken from the Ritz values. 1e-9 is well
  under float32 rounding (about 3e-8 relative in Frobenius norm), so the merged tensor, cast
  to float32, is the exact route's up to that rounding. When the check has not passed within
  half the exact route's cost (a flat spectrum around r: the gap is small and the iterations
  converge slowly; or sooner, when the bound's last rate of decrease cannot reach 1e-9 within
  that budget), the exact route is taken: the route never returns unchecked factors, and a
  failed attempt costs at most 1.5x the exact route. Matrices below 256 on their small side,
  or whose sketch would exceed half of it, always take the exact route.

:class:`SvdRoute` carries the choice and counts which route each matrix took (reported in the
results' method details when the route is randomized).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging import float64_kernels as kernels

SvdKind = Literal["exact", "randomized"]
SVD_KINDS: tuple[str, ...] = ("exact", "randomized")

#: The Gram route is used when sigma_r / sigma_1 is at least this: there it is more accurate
#: than a float32 SVD (its float64 error on sigma_r is about 1e-13 * sigma_1**2 / sigma_r). Below
#: it, or for (numerically) zero singular values, whose singular vectors the Gram matrix does not
#: determine, a full SVD is used.
GRAM_MIN_RATIO = 1e-5
#: The randomized route's acceptance threshold (relative error bound of the rank-r truncation).
RANDOMIZED_TOLERANCE = 1e-9
#: Matrices smaller than this on their small side always take the exact route.
RANDOMIZED_MIN_SIZE = 256
#: A randomized attempt may spend at most this share of the exact route's cost.
RANDOMIZED_BUDGET = 0.5
#: Cost of a float64 eigendecomposition of an n x n matrix, in the multiply-adds of a float64
#: matrix product taking as long (measured: about 7 n^3 at n = 768..1024 on a 2-core CPU).
EIGH_COST = 7.0
#: The QR factorisations and the small SVD of an iteration, per multiply-add, against a matrix
#: product (measured: about 5x slower at ViT sizes).
QR_WEIGHT = 5
#: Devices where the Gram and randomized routes run in float64 (``merge_device=cuda`` included).
FLOAT64_DEVICES = ("cpu", "cuda")


def dense_work(route: SvdRoute | None = None) -> contextlib.AbstractContextManager[None]:
    """The context the exact route's matrices are processed in: torch on one thread while
    scipy's BLAS does the dense work (``float64_kernels.blas_owns_the_cores``); the randomized
    route keeps torch's threads (its products and QRs are torch's)."""
    if route is not None and route.kind != "exact":
        return contextlib.nullcontext()
    return kernels.blas_owns_the_cores()


def computes_in_float64(tensor: torch.Tensor) -> bool:
    """Whether the factors of ``tensor`` are computed in float64 on its device."""
    return tensor.device.type in FLOAT64_DEVICES


def check_svd_kind(value: str) -> str:
    """``value`` if it names a route, or a one-line error."""
    if value not in SVD_KINDS:
        raise ConfigError(f"method.svd must be one of {SVD_KINDS} (default exact), got {value!r}")
    return value


@dataclass
class SvdRoute:
    """How top-r factors are computed, and a tally of the route each matrix took.

    Attributes:
        kind: ``"exact"`` or ``"randomized"`` (see the module docstring).
        tolerance: The randomized route's acceptance threshold.
        taken: Route name -> matrices decomposed by it.
    """

    kind: str = "exact"
    tolerance: float = RANDOMIZED_TOLERANCE
    taken: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        check_svd_kind(self.kind)

    def top_factors(
        self, tensor: torch.Tensor, r: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-``r`` ``(U, S, Vh)`` of ``tensor`` (float64 where they come from the Gram matrix
        or the randomized route; possibly views of a larger decomposition)."""
        if self.kind == "randomized" and _worth_sketching(tensor, r):
            factors = randomized_top_factors(tensor, r, self.tolerance)
            if factors is not None:
                self.taken["randomized"] += 1
                return factors
            self.taken["randomized, check failed: exact"] += 1
        if computes_in_float64(tensor) and 0 < r <= min(tensor.shape):
            factors = top_factors_by_gram(tensor, r)
            if factors is not None:
                self.taken["exact (Gram)"] += 1
                return factors
        self.taken["exact (SVD)"] += 1
        return _top_factors_by_svd(tensor, r)

    def details(self) -> dict[str, object]:
        """For the results' method details: ``{"svd": {route, decompositions per route}}`` when the
        route is randomized; nothing for the default exact route."""
        if self.kind == "exact":
            return {}
        return {"svd": {"route": self.kind, "decompositions": dict(sorted(self.taken.items()))}}


def top_factors(
    tensor: torch.Tensor, r: int, route: SvdRoute | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``r`` ``(U, S, Vh)`` of ``tensor`` by ``route`` (default: exact)."""
    return (route or SvdRoute()).top_factors(tensor, r)


def truncated_svd(
    tensor: torch.Tensor, r: int, route: SvdRoute | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``r`` ``(U, S, Vh)`` of ``tensor`` in its dtype: ``U diag(S) Vh`` is its best rank-r
    approximation. The factors are copies: the full decomposition is freed on return."""
    u, s, vh = top_factors(tensor, r, route)
    return tuple(factor.to(tensor.dtype, copy=True) for factor in (u, s, vh))  # type: ignore[return-value]


def _top_factors_by_svd(
    tensor: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if tensor.shape[0] < tensor.shape[1]:  # wide: decompose the transpose (faster, same factors)
        v, s, uh = torch.linalg.svd(tensor.mT, full_matrices=False)
        return uh[:r].mT, s[:r], v[:, :r].mT
    u, s, vh = torch.linalg.svd(tensor, full_matrices=False)
    return u[:, :r], s[:r], vh[:r]


# --------------------------------------------------------------------------- exact: Gram route
def gram_upper(x: torch.Tensor) -> torch.Tensor:
    """``x^T x`` of which only the upper triangle is to be read (:func:`eigh_upper`): on the
    CPU in float64 BLAS ``dsyrk``, half the multiply-adds of a product
    (:mod:`taskmerge.merging.float64_kernels`); elsewhere the full product."""
    if kernels.runs_here(x) and x.numel() > 0:
        return kernels.gram_upper(x)
    return x.mT @ x


def eigh_upper(matrix: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of a symmetric matrix of which the upper triangle is read, ascending: on the
    CPU in float64 only the ``top`` largest where that is cheaper (LAPACK's MRRR), else all
    (:func:`taskmerge.merging.float64_kernels.eigh_upper`); elsewhere ``torch.linalg.eigh``
    (all pairs)."""
    if kernels.runs_here(matrix):
        return kernels.eigh_upper(matrix, top)
    return torch.linalg.eigh(matrix, UPLO="U")


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``, through the same BLAS as :func:`gram_upper` on the CPU in float64."""
    if kernels.runs_here(a, b):
        return kernels.matmul(a, b)
    return a @ b


def _float64(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float64 (no copy when it is; on the CPU cast by numpy, one thread)."""
    if tensor.dtype == torch.float64:
        return tensor.detach()
    if tensor.device.type == "cpu" and tensor.dtype == torch.float32:
        return kernels.as_float64(tensor)
    return tensor.detach().double()


def gram_eigh(x: torch.Tensor, top: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(eigenvalues, eigenvectors)`` of ``x^T x``, descending, for a tall float64 ``x`` (only
    the ``top`` largest); None when ``x`` is zero."""
    values, vectors = eigh_upper(gram_upper(x), top)
    if not values[-1] > 0:
        return None
    if top is not None:  # only the pairs asked for are reordered (copied)
        values, vectors = values[-top:], vectors[:, -top:]
    return values.flip(0), vectors.flip(1)


def top_factors_by_gram(
    tensor: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Top-``r`` ``(U, S, Vh)`` in float64 from the Gram matrix; None when it is ill-suited
    (``sigma_r < GRAM_MIN_RATIO * sigma_1``, or a zero matrix)."""
    wide = tensor.shape[0] < tensor.shape[1]
    x = _float64(tensor.mT if wide else tensor)  # tall (m, n), m >= n
    eig = gram_eigh(x, top=r)
    if eig is None or eig[0][r - 1] < GRAM_MIN_RATIO**2 * eig[0][0]:
        return None
    s = eig[0].sqrt()
    v = eig[1].contiguous()
    u = matmul(x, v).div_(s)
    return (v, s, u.mT) if wide else (u, s, v.mT)


# --------------------------------------------------------------------------- randomized route
def _sketch_size(r: int) -> int:
    return r + max(10, r // 2)


def _worth_sketching(tensor: torch.Tensor, r: int) -> bool:
    small = min(tensor.shape)
    return (
        computes_in_float64(tensor)
        and small >= RANDOMIZED_MIN_SIZE
        and 0 < r
        and 2 * _sketch_size(r) <= small
    )


def truncation_error_bound(singular_values: torch.Tensor, residual_norm: float, r: int) -> float:
    """The check's bound on ``||computed - exact rank-r truncation||_F / ||S_r||``: ``(||R|| +
    sqrt(2) s_1 ||R|| / (s_r - s_(r+1))) / ||s_r||``; inf when the Ritz gap is not positive."""
    s = singular_values
    norm = float(s[:r].norm())
    gap = float(s[r - 1] - s[r]) if s.shape[0] > r else float(s[r - 1])
    if norm == 0 or gap <= 0:
        return math.inf
    return (residual_norm + math.sqrt(2) * float(s[0]) * residual_norm / gap) / norm


def randomized_top_factors(
    tensor: torch.Tensor, r: int, tolerance: float = RANDOMIZED_TOLERANCE, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Top-``r`` ``(U, S, Vh)`` in float64 by a seeded randomized range finder with power
    iterations, or None when :func:`truncation_error_bound` stays above ``tolerance`` within
    ``RANDOMIZED_BUDGET`` of the exact route's cost (module docstring)."""
    wide = tensor.shape[0] < tensor.shape[1]
    x = (tensor.mT if wide else tensor).detach().double()  # tall (m, n), m >= n
    m, n = x.shape
    sketch = _sketch_size(r)
    budget = RANDOMIZED_BUDGET * (m * n * n + EIGH_COST * n**3)
    # multiply-adds of one iteration; the QR and the small SVD run far below a matrix product's
    # speed: weighted QR_WEIGHT
    step = 2 * m * n * sketch + QR_WEIGHT * (2 * m + n) * sketch**2
    generator = torch.Generator().manual_seed(seed)
    omega = torch.randn(n, sketch, generator=generator, dtype=torch.float64).to(x.device)
    basis = torch.linalg.qr(x @ omega).Q
    spent = m * n * sketch + QR_WEIGHT * m * sketch**2
    previous = math.inf
    while True:
        projected = x.mT @ basis  # (n, l) = (Q^T X)^T
        z, s, wh = torch.linalg.svd(projected, full_matrices=False)  # Q^T X = W diag(s) Z^T
        u = basis @ wh.mT[:, :r]
        image = x @ z  # X Z: its first r columns give the residual, all of it the next basis
        residual = float(torch.linalg.matrix_norm(image[:, :r] - u * s[:r]))
        spent += step
        bound = truncation_error_bound(s, residual, r)
        if bound <= tolerance:
            v = z[:, :r].contiguous()
            return (v, s[:r].clone(), u.mT) if wide else (u, s[:r].clone(), v.mT)
        affordable = (budget - spent) // step
        if affordable < 1 or not _may_converge(bound, previous, tolerance, affordable):
            return None
        previous = bound
        basis = torch.linalg.qr(image).Q  # one power iteration: range(X X^T Q)


def _may_converge(bound: float, previous: float, tolerance: float, iterations: float) -> bool:
    """Whether the bound, shrinking at its last rate, reaches ``tolerance`` within
    ``iterations`` more power iterations (always true after the first check)."""
    if not math.isfinite(previous) or not math.isfinite(bound):
        return not math.isfinite(previous)
    rate = bound / previous
    if rate >= 1:
        return False
    return bound * rate**iterations <= tolerance


# --------------------------------------------------------------------------- polar factors
def polar_decomposition(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P Q^T, sigma)`` of ``x = P diag(sigma) Q^T``: the orthogonal polar factor (the nearest
    matrix with orthonormal columns, or rows for a wide ``x``) and the ``min(m, n)`` singular
    values, descending.

    For a well-conditioned ``x`` on the CPU or a CUDA device: ``x (x^T x)^{-1/2}`` (of the tall
    orientation) from a float64 eigendecomposition of the Gram matrix, the small
    ``(x^T x)^{-1/2}`` formed first (the same matrix as the SVD's ``P Q^T``, at the cost of one
    symmetric eigendecomposition and two products: no ``P`` and ``Q`` are formed), sigma the
    square roots of its eigenvalues. Otherwise (``sigma_min < GRAM_MIN_RATIO sigma_1``, whose
    null directions the Gram matrix does not fix, or another device) from the SVD.
    """
    if x.shape[0] < x.shape[1]:
        polar, sigma = polar_decomposition(x.mT)
        return polar.mT, sigma
    if computes_in_float64(x) and x.shape[1] > 0:
        x64 = _float64(x)
        eig = gram_eigh(x64)
        if eig is not None and eig[0][-1] >= GRAM_MIN_RATIO**2 * eig[0][0]:
            values, q = eig
            polar = matmul(x64, matmul(q * values.rsqrt(), q.mT))
            return polar.to(x.dtype), values.sqrt().to(x.dtype)
    p, sigma, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh, sigma


def polar_factor(x: torch.Tensor) -> torch.Tensor:
    """Orthogonal polar factor ``P Q^T`` of ``x = P Sigma Q^T`` (:func:`polar_decomposition`)."""
    return polar_decomposition(x)[0]
