"""TIES-merging: trim, elect sign, disjoint merge (Yadav et al., arXiv:2306.01708).

Read from ``prateeky2806/ties-merging`` and ``nik-dim/tall_masks`` (``src/utils/ties_utils.py``),
which agree:

1. Trim: per task keep ``|tau_t| >= threshold`` with the threshold keeping the top ``k``% of that
   task's WHOLE (flattened) vector, ``kthvalue(n - int(n * k / 100))``; ties are kept; k=100 is no
   trim. ``trim_scope="tensor"`` (an option, not the reference) takes the top k% of each tensor.
2. Elect: ``sign(sum_t trimmed tau_t)``; entries whose sum is exactly 0 get the majority sign
   ``sign(sum of the elected signs over the whole vector)`` (``resolve_zero_signs``), a single
   global number computed here in a first pass over the tensors.
3. Disjoint merge over ``where(sign > 0, tau > 0, tau < 0)`` (so if even the global balance is
   0, the still-zero entries take the negative values, as in the reference): ``agg="mean"``
   divides the sum by the agreeing count (at least 1), ``agg="sum"`` does not.

Then theta0 + alpha * tau. Defaults: the paper and LiNeS (``wang-kee/LiNeS`` ``ties.yaml``) use
k=20, agg="mean" (the defaults here); ``nik-dim/tall_masks`` ``ties.yaml`` uses k=100 (no trim)
with dis-mean; TALL/Consensus build their multi-task vector with k=20, agg="sum".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.masks import trim_thresholds
from taskmerge.task_vectors import TaskVector

Vector = Mapping[str, torch.Tensor]
AGGREGATIONS = ("mean", "sum")


def trim_tensor(tau: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero the entries with ``|tau| < threshold`` (entries at the threshold are kept)."""
    return tau * (tau.abs() >= threshold)


def elect_sign(trimmed: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sign(sum_t trimmed_t)``; exact zeros stay 0 (see :func:`resolve_zero_signs`)."""
    return torch.sign(torch.stack(list(trimmed)).sum(0))


def resolve_zero_signs(sign: torch.Tensor, majority: float) -> torch.Tensor:
    """Replace zero elected signs by ``majority`` (the reference's ``"majority"`` rule)."""
    return torch.where(sign == 0, torch.full_like(sign, majority), sign)


def disjoint_merge(trimmed: Sequence[torch.Tensor], sign: torch.Tensor, agg: str) -> torch.Tensor:
    """Sum (``agg="sum"``) or mean (``agg="mean"``) of the entries agreeing with ``sign``."""
    if agg not in AGGREGATIONS:
        raise ConfigError(f"TIES agg must be one of {AGGREGATIONS}, got {agg!r}")
    stacked = torch.stack(list(trimmed))
    agree = torch.where(sign.unsqueeze(0) > 0, stacked > 0, stacked < 0)
    selected = stacked * agree
    total = selected.sum(0)
    if agg == "sum":
        return total
    return total / agree.sum(0).clamp(min=1).to(total.dtype)


def ties_merge_tensor(
    taus: Sequence[torch.Tensor],
    thresholds: Sequence[float],
    majority: float,
    agg: str = "mean",
) -> torch.Tensor:
    """TIES on one parameter tensor, given each task's trim threshold and the majority sign."""
    trimmed = [trim_tensor(tau, thr) for tau, thr in zip(taus, thresholds, strict=True)]
    sign = resolve_zero_signs(elect_sign(trimmed), majority)
    return disjoint_merge(trimmed, sign, agg)


def majority_sign(vectors: Sequence[Vector], thresholds: Sequence[Mapping[str, float]]) -> float:
    """``sign(sum over all entries of sign(sum_t trimmed tau_t))``, one tensor at a time."""
    balance = 0
    pairs = list(zip(vectors, thresholds, strict=True))
    for name in vectors[0]:
        trimmed = [trim_tensor(v[name], thr[name]) for v, thr in pairs]
        balance += int(elect_sign(trimmed).to(torch.int64).sum())
    return float((balance > 0) - (balance < 0))


def ties_merge(
    vectors: Sequence[Vector], k: float = 20, agg: str = "mean", trim_scope: str = "global"
) -> dict[str, torch.Tensor]:
    """TIES-merge task vectors (parameter name -> tensor), tensor by tensor.

    Args:
        vectors: One mapping per task, all with the same parameter names.
        k: Percentage of each task's entries kept by the trim (100: no trim).
        agg: ``"mean"`` (paper, LiNeS) or ``"sum"`` (TALL/Consensus' multi-task vector).
        trim_scope: ``"global"`` (reference: whole task vector) or ``"tensor"``.

    Returns:
        The merged vector, before the scaling coefficient.
    """
    if agg not in AGGREGATIONS:
        raise ConfigError(f"TIES agg must be one of {AGGREGATIONS}, got {agg!r}")
    thresholds = [trim_thresholds(v, k, trim_scope) for v in vectors]
    majority = majority_sign(vectors, thresholds)
    return {
        name: ties_merge_tensor(
            [v[name] for v in vectors], [thr[name] for thr in thresholds], majority, agg
        )
        for name in vectors[0]
    }


class Ties(MergeMethod):
    """TIES-merging (arXiv:2306.01708): theta0 + alpha * TIES(tau_1..tau_T), alpha swept.

    Args:
        k: Top-k% kept per task (paper/LiNeS 20, the default; tall_masks' YAML 100).
        agg: ``"mean"`` (default) or ``"sum"``.
        trim_scope: ``"global"`` (default, reference) or ``"tensor"``.
        scaling_coef: Fixed alpha, or None to sweep ``grid``.
        grid: Alphas tried on Val.
    """

    name = "ties"

    def __init__(
        self,
        k: float = 20,
        agg: str = "mean",
        trim_scope: str = "global",
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        if agg not in AGGREGATIONS:
            raise ConfigError(f"method.agg must be one of {AGGREGATIONS}, got {agg!r}")
        self.k, self.agg, self.trim_scope = k, agg, trim_scope

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        return TaskVector(ties_merge(vectors, self.k, self.agg, self.trim_scope))
