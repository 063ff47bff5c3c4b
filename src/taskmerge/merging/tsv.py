"""Task Singular Vectors: TSV-Merge and TSV-Compress (Gargiulo et al., arXiv:2412.00081).

Read from ``AntoAndGar/task_singular_vectors`` (``src/utils/TSVM_utils.py``,
``src/utils/TSVC_utils.py``, ``src/eval/aggregation.py``):

* Which tensors: SVD for every 2-D tensor whose name does not contain ``text_projection``;
  every other tensor (1-D, conv kernels, class embedding, ``text_projection``) is the mean of the
  tau_t. TSV-C (reference ``compress_tv``) compresses every 2-D tensor, ``text_projection`` too.
* Rank per task: ``r = floor(min(m, n) / T)`` (reference: ``int(rank * (1 / T))``, which can be
  one lower when ``rank / T`` is an integer but the float product rounds down, e.g. 49 * (1/49);
  here the exact floor). ``sv_reduction`` overrides the fraction 1/T (``int(rank * sv_reduction)``).
  With T > rank, r = 0 and the merged tensor is zero, as in the reference.
* TSVM: concatenate the top-r ``U_t``, ``S_t``, ``V_t`` of all tasks, replace ``U_cat`` and
  ``V_cat`` by their orthogonal polar factors (``X = P Sigma Q^T -> P Q^T``), and return
  ``U_perp diag(S_cat) V_perp^T``. The reference zero-pads the concatenation to ``rank`` columns;
  the padded columns meet zero singular values, so dropping them (done here) gives the same
  matrix.
* TSVM_2: ``U_cat`` and ``V_cat`` whitened instead, ``X (X^T X)^{-1/2}`` by an eigendecomposition
  with the reference's ``1 / (sqrt(|lambda|) + 1e-12)``. The reference's sort of ``S_cat`` only
  permutes columns consistently and is skipped.
* TSVC: per task, a rank-r reconstruction ``U_r diag(S_r) V_r^T`` of each 2-D tensor; the task is
  evaluated with theta0 + its reconstruction at coefficient 1 (no sweep).

Memory: one matrix at a time; the tasks' matrices are decomposed one after the other and only
their top-r factors kept, so the concatenated factors are ``m x (T r)`` and ``n x (T r)`` with
``T r <= min(m, n)``, whatever T.

Speed: each task's top-r factors come from :mod:`taskmerge.merging.svd_routes` (``method.svd``):
``exact`` (default), the float64 eigendecomposition of the smaller Gram matrix, faster than a
float32 SVD at ViT sizes and more accurate; ``randomized``, a checked randomized range finder
that falls back to it. The polar factors come from float64 Gram eigendecompositions too.

The module is a little over 400 lines because it is one concept: the task-singular-vector
family (its SVD routes, TSV-M, TSV-C and the storage report share the same factors).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch

from taskmerge.errors import ConfigError
from taskmerge.io.checks import require_keys
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.svd_routes import (
    SvdRoute,
    check_svd_kind,
    computes_in_float64,
    dense_work,
    eigh_upper,
    gram_upper,
    matmul,
    polar_factor,
    top_factors,
    truncated_svd,
)
from taskmerge.merging.tensorwise import (
    DerivedStateDict,
    column,
    each_parameter_of,
    parameter_names,
    release_memory,
    running_sum,
    shape_of,
)
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]
ORTHOGONALIZATIONS = ("polar", "whiten")
EXCLUDED_NAME = "text_projection"


def is_svd_target(name: str, tensor: torch.Tensor | torch.Size) -> bool:
    """Whether TSV-M decomposes this tensor (or shape): 2-D and not a ``text_projection``."""
    ndim = len(tensor) if isinstance(tensor, torch.Size) else tensor.ndim
    return ndim == 2 and EXCLUDED_NAME not in name


def task_rank(shape: Sequence[int], num_tasks: int, sv_reduction: float | None = None) -> int:
    """Components kept per task: ``min(shape) // num_tasks``, or ``int(min(shape) * fraction)``."""
    rank = min(shape)
    if sv_reduction is None:
        return rank // num_tasks
    return min(rank, int(rank * sv_reduction))


def whiten(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x (x^T x)^{-1/2}`` through ``eigh`` (TSVM_2), with ``1 / (sqrt(|l|) + eps)``."""
    eigenvalues, q = eigh_upper(gram_upper(x))
    inv_sqrt = matmul(q * (1.0 / (eigenvalues.abs().sqrt() + eps)), q.mT)  # q diag(.) q^T
    return matmul(x, inv_sqrt)


def tsv_merge_matrix(
    taus: Iterable[torch.Tensor],
    orthogonalize: str = "polar",
    sv_reduction: float | None = None,
    num_tasks: int | None = None,
    route: SvdRoute | None = None,
) -> torch.Tensor:
    """TSV-M of one 2-D parameter across tasks.

    Args:
        taus: One ``(m, n)`` task-vector matrix per task, consumed one at a time (a generator of
            lazy reads works: only each task's top-r factors are kept).
        orthogonalize: ``"polar"`` (TSVM) or ``"whiten"`` (TSVM_2).
        sv_reduction: Fraction of the rank kept per task; None: ``1 / T``.
        num_tasks: T, required when ``taus`` has no ``len``.
        route: How each task's top-r factors are computed (default: exact).
    """
    if orthogonalize not in ORTHOGONALIZATIONS:
        raise ConfigError(
            f"orthogonalize must be one of {ORTHOGONALIZATIONS}, got {orthogonalize!r}"
        )
    count = num_tasks if num_tasks is not None else len(taus)  # type: ignore[arg-type]
    with dense_work(route):
        return _merge_factors(taus, count, orthogonalize, sv_reduction, route)


def _merge_factors(
    taus: Iterable[torch.Tensor],
    count: int,
    orthogonalize: str,
    sv_reduction: float | None,
    route: SvdRoute | None,
) -> torch.Tensor:
    """:func:`tsv_merge_matrix` for ``count`` matrices."""
    u_cat = s_cat = vh_cat = None
    seen = r = 0
    for tau in taus:
        if u_cat is None:
            r = task_rank(tau.shape, count, sv_reduction)
            if r == 0:
                return torch.zeros_like(tau)
            # the concatenated factors, allocated once before any decomposition; float64 on the
            # CPU, where the factors come from float64 Gram matrices (a few MB per matrix)
            dtype = tau.dtype
            work = torch.float64 if computes_in_float64(tau) else dtype
            u_cat = tau.new_empty((tau.shape[0], count * r), dtype=work)
            s_cat = tau.new_empty(count * r, dtype=work)
            vh_cat = tau.new_empty((count * r, tau.shape[1]), dtype=work)
        if seen == count:
            raise ValueError(f"tsv_merge_matrix got more than num_tasks={count} matrices")
        u, s, vh = top_factors(tau, r, route)
        columns = slice(seen * r, (seen + 1) * r)
        u_cat[:, columns], s_cat[columns], vh_cat[columns] = u, s, vh
        seen += 1
        del tau, u, s, vh
        release_memory()  # the decomposition's buffers, before the next task's
    if u_cat is None or seen != count:
        raise ValueError(f"tsv_merge_matrix got {seen} matrices, expected {count}")
    ortho = polar_factor if orthogonalize == "polar" else whiten
    # U_perp diag(S) V_perp^T, the diagonal as a column scaling (no (m, k) x (k, k) product)
    return matmul(ortho(u_cat) * s_cat, ortho(vh_cat.mT).mT).to(dtype)


def tsv_merge(
    vectors: Sequence[Vector],
    orthogonalize: str = "polar",
    sv_reduction: float | None = None,
    route: SvdRoute | None = None,
) -> dict[str, torch.Tensor]:
    """TSV-M over whole task vectors, one parameter at a time (other tensors: mean of tau_t),
    streaming over the tasks."""
    merged = {}
    count = len(vectors)
    for name in each_parameter_of(vectors):
        taus = column(vectors, name)
        if is_svd_target(name, shape_of(vectors[0], name)):
            merged[name] = tsv_merge_matrix(
                taus, orthogonalize, sv_reduction, num_tasks=count, route=route
            )
        else:
            merged[name] = running_sum(taus) / count
    return merged


# --------------------------------------------------------------------------- TSV-Compress
@dataclass
class LowRank:
    """``u diag(s) vh``: a rank-r factorisation stored in place of an ``(m, n)`` matrix."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor

    def reconstruct(self) -> torch.Tensor:
        """The ``(m, n)`` matrix."""
        return (self.u * self.s) @ self.vh

    def numel(self) -> int:
        """Floats stored: ``r * (m + n + 1)``."""
        return self.u.numel() + self.s.numel() + self.vh.numel()


Compressed = dict[str, LowRank | torch.Tensor]


def compress_tensor(
    tensor: torch.Tensor,
    num_tasks: int,
    sv_reduction: float | None = None,
    route: SvdRoute | None = None,
) -> LowRank | torch.Tensor:
    """TSV-C of one tensor: a 2-D tensor as its top-r SVD factors, any other kept whole."""
    if tensor.ndim != 2:
        return tensor
    rank = task_rank(tensor.shape, num_tasks, sv_reduction)
    with dense_work(route):
        return LowRank(*truncated_svd(tensor, rank, route))


def tsv_compress(
    vector: Vector,
    num_tasks: int,
    sv_reduction: float | None = None,
    route: SvdRoute | None = None,
) -> Compressed:
    """TSV-C of one task vector: every 2-D tensor as its top-r SVD factors, others kept whole."""
    return {name: compress_tensor(vector[name], num_tasks, sv_reduction, route) for name in vector}


def compressed_tensor(
    vector: Vector,
    num_tasks: int,
    sv_reduction: float | None,
    name: str,
    route: SvdRoute | None = None,
) -> torch.Tensor:
    """The rank-r reconstruction of one tensor of a task vector (computed now)."""
    value = compress_tensor(vector[name], num_tasks, sv_reduction, route)
    return value.reconstruct() if isinstance(value, LowRank) else value


def tsv_reconstruct(compressed: Mapping[str, LowRank | torch.Tensor]) -> dict[str, torch.Tensor]:
    """The task vector a TSV-C compression stands for (rank-r matrices, other tensors as is)."""
    return {
        name: value.reconstruct() if isinstance(value, LowRank) else value
        for name, value in compressed.items()
    }


@dataclass
class StorageReport:
    """Floats needed to store the task vectors in full vs compressed."""

    full: int
    stored: int

    @property
    def ratio(self) -> float:
        """``stored / full``."""
        return self.stored / self.full if self.full else 1.0

    @property
    def saved(self) -> int:
        """Floats saved."""
        return self.full - self.stored


def storage_from_shapes(
    shapes: Mapping[str, Sequence[int]],
    num_tasks: int,
    sv_reduction: float | None = None,
    copies: int | None = None,
) -> StorageReport:
    """The :func:`storage_report` of TSV-C from the shapes alone (no SVD): ``copies`` task
    vectors (default ``num_tasks``) with these shapes, each 2-D tensor stored as
    ``r * (m + n + 1)`` floats."""
    full = stored = 0
    for shape in shapes.values():
        numel = int(torch.Size(shape).numel())
        full += numel
        if len(shape) == 2:
            m, n = shape
            stored += task_rank(shape, num_tasks, sv_reduction) * (m + n + 1)
        else:
            stored += numel
    times = num_tasks if copies is None else copies
    return StorageReport(full=full * times, stored=stored * times)


def storage_report(compressed: Sequence[Mapping[str, LowRank | torch.Tensor]]) -> StorageReport:
    """Storage of TSV-C compressions (one per task) against the full task vectors."""
    full = stored = 0
    for task in compressed:
        for value in task.values():
            if isinstance(value, LowRank):
                full += value.u.shape[0] * value.vh.shape[1]
                stored += value.numel()
            else:
                full += value.numel()
                stored += value.numel()
    return StorageReport(full=full, stored=stored)


# --------------------------------------------------------------------------- method classes
@register_method(
    "TSVM_2",
    scaled=True,
    lines="multitask",
    summary="TSV-Merge with whitened factors, X (X^T X)^{-1/2}, instead of polar factors.",
    orthogonalize="whiten",
)
@register_method("TSVM", scaled=True, lines="multitask")
class TSVMerge(MergeMethod):
    """TSV-Merge (arXiv:2412.00081): theta0 + alpha * TSVM(tau_1..tau_T), alpha swept.

    Args:
        orthogonalize: ``"polar"`` (reference ``TSVM``, default) or ``"whiten"`` (``TSVM_2``).
        sv_reduction: Fraction of each matrix's rank kept per task; None (default): 1/T.
        scaling_coef: Fixed alpha, or None to sweep ``grid`` (reference: 0.1..3.0).
        grid: Alphas tried on Val.
        svd: ``"exact"`` (default) or ``"randomized"`` (:mod:`taskmerge.merging.svd_routes`).
    """

    def __init__(
        self,
        orthogonalize: Literal["polar", "whiten"] = "polar",
        sv_reduction: float | None = None,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
        svd: str = "exact",
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        self.route = SvdRoute(check_svd_kind(svd))
        if orthogonalize not in ORTHOGONALIZATIONS:
            raise ConfigError(
                f"method.orthogonalize must be one of {ORTHOGONALIZATIONS}, got {orthogonalize!r}"
            )
        self.orthogonalize, self.sv_reduction = orthogonalize, sv_reduction

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        with dense_work(self.route):  # one context for the whole pass (reads included)
            merged = tsv_merge(vectors, self.orthogonalize, self.sv_reduction, self.route)
        return TaskVector(merged)

    def details(self) -> dict[str, Any]:
        """With ``svd=randomized``: which route each matrix took."""
        return self.route.details()


@register_method("TSVC", scaled=False)
class TSVCompress(MergeMethod):
    """TSV-Compress (arXiv:2412.00081): task t uses theta0 + its rank-r tau_t; no sweep.

    Args:
        sv_reduction: Fraction of each matrix's rank kept; None (default): 1/T.
        svd: ``"exact"`` (default) or ``"randomized"`` (:mod:`taskmerge.merging.svd_routes`).
    """

    per_task_result = True

    def __init__(self, sv_reduction: float | None = None, svd: str = "exact") -> None:
        super().__init__(scaling_coef=1.0)
        self.sv_reduction = sv_reduction
        self.route = SvdRoute(check_svd_kind(svd))
        self.report: StorageReport | None = None

    def compress(self, task_vectors: Mapping[str, TaskVector]) -> dict[str, Compressed]:
        """Task name -> compressed task vector; sets :attr:`report`."""
        count = len(task_vectors)
        with dense_work(self.route):
            compressed = {
                task: tsv_compress(tv.vector, count, self.sv_reduction, self.route)
                for task, tv in task_vectors.items()
            }
        self.report = storage_report(list(compressed.values()))
        return compressed

    def details(self) -> dict[str, Any]:
        """With ``svd=randomized``: which route each matrix took."""
        return self.route.details()

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> dict[str, TaskVector]:  # type: ignore[override]
        """Task name -> its reconstructed (rank-r) task vector."""
        return {
            task: TaskVector(tsv_reconstruct(c)) for task, c in self.compress(task_vectors).items()
        }

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:
        """One candidate whose per-task models are reconstructed (SVD) when evaluated, one tensor
        at a time; :attr:`report` comes from the shapes."""
        vectors = [tv.vector for tv in task_vectors.values()]
        names = parameter_names(vectors)
        require_keys(names, pretrained)
        count = len(vectors)
        shapes = {name: shape_of(vectors[0], name) for name in names}
        self.report = storage_from_shapes(shapes, count, self.sv_reduction)
        per_task = {
            task: DerivedStateDict(
                pretrained,
                partial(_reconstructed, tv.vector, count, self.sv_reduction, self.route),
            )
            for task, tv in task_vectors.items()
        }
        yield Candidate({}, per_task=per_task)  # type: ignore[arg-type]


def _reconstructed(
    vector: Vector, num_tasks: int, sv_reduction: float | None, route: SvdRoute, name: str
) -> torch.Tensor | None:
    if name not in vector:
        return None
    return compressed_tensor(vector, num_tasks, sv_reduction, name, route)
