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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.task_vectors import TaskVector

Vector = Mapping[str, torch.Tensor]
ORTHOGONALIZATIONS = ("polar", "whiten")
EXCLUDED_NAME = "text_projection"


def is_svd_target(name: str, tensor: torch.Tensor) -> bool:
    """Whether TSV-M decomposes this tensor: 2-D and not a ``text_projection``."""
    return tensor.ndim == 2 and EXCLUDED_NAME not in name


def task_rank(shape: Sequence[int], num_tasks: int, sv_reduction: float | None = None) -> int:
    """Components kept per task: ``min(shape) // num_tasks``, or ``int(min(shape) * fraction)``."""
    rank = min(shape)
    if sv_reduction is None:
        return rank // num_tasks
    return min(rank, int(rank * sv_reduction))


def truncated_svd(tensor: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``r`` ``(U, S, Vh)`` of ``tensor``: ``U diag(S) Vh`` is its best rank-r approximation."""
    u, s, vh = torch.linalg.svd(tensor, full_matrices=False)
    return u[:, :r], s[:r], vh[:r]


def polar_factor(x: torch.Tensor) -> torch.Tensor:
    """Orthogonal polar factor ``P Q^T`` of ``x = P Sigma Q^T`` (the nearest orthonormal matrix)."""
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def whiten(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x (x^T x)^{-1/2}`` through ``eigh`` (TSVM_2), with ``1 / (sqrt(|l|) + eps)``."""
    eigenvalues, q = torch.linalg.eigh(x.mT @ x)
    inv_sqrt = q @ torch.diag(1.0 / (eigenvalues.abs().sqrt() + eps)) @ q.mT
    return x @ inv_sqrt


def tsv_merge_matrix(
    taus: Sequence[torch.Tensor], orthogonalize: str = "polar", sv_reduction: float | None = None
) -> torch.Tensor:
    """TSV-M of one 2-D parameter across tasks.

    Args:
        taus: One ``(m, n)`` task-vector matrix per task.
        orthogonalize: ``"polar"`` (TSVM) or ``"whiten"`` (TSVM_2).
        sv_reduction: Fraction of the rank kept per task; None: ``1 / T``.
    """
    if orthogonalize not in ORTHOGONALIZATIONS:
        raise ConfigError(
            f"orthogonalize must be one of {ORTHOGONALIZATIONS}, got {orthogonalize!r}"
        )
    r = task_rank(taus[0].shape, len(taus), sv_reduction)
    if r == 0:
        return torch.zeros_like(taus[0])
    factors = [truncated_svd(tau, r) for tau in taus]
    u_cat = torch.cat([u for u, _, _ in factors], dim=1)
    s_cat = torch.cat([s for _, s, _ in factors])
    v_cat = torch.cat([vh for _, _, vh in factors], dim=0).mT
    ortho = polar_factor if orthogonalize == "polar" else whiten
    return ortho(u_cat) @ torch.diag(s_cat) @ ortho(v_cat).mT


def tsv_merge(
    vectors: Sequence[Vector], orthogonalize: str = "polar", sv_reduction: float | None = None
) -> dict[str, torch.Tensor]:
    """TSV-M over whole task vectors, one parameter at a time (other tensors: mean of tau_t)."""
    merged = {}
    for name, first in vectors[0].items():
        taus = [v[name] for v in vectors]
        if is_svd_target(name, first):
            merged[name] = tsv_merge_matrix(taus, orthogonalize, sv_reduction)
        else:
            merged[name] = torch.stack(taus).mean(0)
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
        return self.u @ torch.diag(self.s) @ self.vh

    def numel(self) -> int:
        """Floats stored: ``r * (m + n + 1)``."""
        return self.u.numel() + self.s.numel() + self.vh.numel()


Compressed = dict[str, LowRank | torch.Tensor]


def tsv_compress(vector: Vector, num_tasks: int, sv_reduction: float | None = None) -> Compressed:
    """TSV-C of one task vector: every 2-D tensor as its top-r SVD factors, others kept whole."""
    compressed: Compressed = {}
    for name, tensor in vector.items():
        if tensor.ndim == 2:
            r = task_rank(tensor.shape, num_tasks, sv_reduction)
            compressed[name] = LowRank(*truncated_svd(tensor, r))
        else:
            compressed[name] = tensor
    return compressed


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
class TSVMerge(MergeMethod):
    """TSV-Merge (arXiv:2412.00081): theta0 + alpha * TSVM(tau_1..tau_T), alpha swept.

    Args:
        orthogonalize: ``"polar"`` (reference ``TSVM``, default) or ``"whiten"`` (``TSVM_2``).
        sv_reduction: Fraction of each matrix's rank kept per task; None (default): 1/T.
        scaling_coef: Fixed alpha, or None to sweep ``grid`` (reference: 0.1..3.0).
        grid: Alphas tried on Val.
    """

    name = "TSVM"

    def __init__(
        self,
        orthogonalize: str = "polar",
        sv_reduction: float | None = None,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        if orthogonalize not in ORTHOGONALIZATIONS:
            raise ConfigError(
                f"method.orthogonalize must be one of {ORTHOGONALIZATIONS}, got {orthogonalize!r}"
            )
        self.orthogonalize, self.sv_reduction = orthogonalize, sv_reduction
        self.name = "TSVM" if orthogonalize == "polar" else "TSVM_2"

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        return TaskVector(tsv_merge(vectors, self.orthogonalize, self.sv_reduction))


class TSVCompress(MergeMethod):
    """TSV-Compress (arXiv:2412.00081): task t uses theta0 + its rank-r tau_t; no sweep."""

    name = "TSVC"

    def __init__(self, sv_reduction: float | None = None) -> None:
        super().__init__(scaling_coef=1.0)
        self.sv_reduction = sv_reduction
        self.report: StorageReport | None = None

    def compress(self, task_vectors: Mapping[str, TaskVector]) -> dict[str, Compressed]:
        """Task name -> compressed task vector; sets :attr:`report`."""
        count = len(task_vectors)
        compressed = {
            task: tsv_compress(tv.vector, count, self.sv_reduction)
            for task, tv in task_vectors.items()
        }
        self.report = storage_report(list(compressed.values()))
        return compressed

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> dict[str, TaskVector]:  # type: ignore[override]
        """Task name -> its reconstructed (rank-r) task vector."""
        return {
            task: TaskVector(tsv_reconstruct(c)) for task, c in self.compress(task_vectors).items()
        }

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        per_task = {
            task: tv.apply_to_state_dict(pretrained, 1.0)
            for task, tv in self.merge(task_vectors).items()
        }
        yield Candidate({}, per_task=per_task)
