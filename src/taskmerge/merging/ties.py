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

Memory: nothing holds more than one parameter at a time. The trim thresholds come from the exact
radix select of :mod:`taskmerge.merging.streaming` (two passes over each task's tensors); the
majority sign takes one more pass; the merge streams over the tasks with five running buffers
(:class:`DisjointAccumulator`) instead of a tasks x entries stack. In-memory and lazy task
vectors run the same code.

Then theta0 + alpha * tau. Defaults: the paper and LiNeS (``wang-kee/LiNeS`` ``ties.yaml``) use
k=20, agg="mean" (the defaults here); ``nik-dim/tall_masks`` ``ties.yaml`` uses k=100 (no trim)
with dis-mean; TALL/Consensus build their multi-task vector with k=20, agg="sum".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod, check_percentage
from taskmerge.merging.population import (
    TrimPopulation,
    image_fraction_kept,
    population_zeros,
    trim_details,
    vector_numel,
)
from taskmerge.merging.registry import register_method
from taskmerge.merging.streaming import trim_thresholds
from taskmerge.merging.tensorwise import each_parameter_of, running_sum
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]
AGGREGATIONS = ("mean", "sum")


def _check_agg(agg: str) -> None:
    if agg not in AGGREGATIONS:
        raise ConfigError(f"TIES agg must be one of {AGGREGATIONS}, got {agg!r}")


def trim_tensor(tau: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero the entries with ``|tau| < threshold`` (entries at the threshold are kept)."""
    if threshold <= 0:  # keeps every entry: no copy
        return tau
    return tau * (tau.abs() >= threshold)


def elect_sign(trimmed: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sign(sum_t trimmed_t)``, summed in task order; exact zeros stay 0 (see
    :func:`resolve_zero_signs`)."""
    return torch.sign(running_sum(trimmed))


def resolve_zero_signs(sign: torch.Tensor, majority: float) -> torch.Tensor:
    """Replace zero elected signs by ``majority`` (the reference's ``"majority"`` rule)."""
    return torch.where(sign == 0, torch.full_like(sign, majority), sign)


class DisjointAccumulator:
    """Streams the trimmed tensors of one parameter, one task at a time, keeping five running
    buffers (total, positive and negative sums and counts) instead of the tasks x entries stack.

    :meth:`result` then gives the disjoint merge for the elected sign: entries agreeing with
    ``sign`` (``where(sign > 0, tau > 0, tau < 0)``, so a still-zero sign takes the negatives, as
    the reference) are summed, and divided by their count (at least 1) for ``agg="mean"``.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self._pos = self._neg = self._n_pos = self._n_neg = None

    def add(self, trimmed: torch.Tensor) -> None:
        """Add one task's trimmed tensor."""
        if self.total is None:
            self.total = trimmed.clone()
            self._pos, self._neg = trimmed.clamp(min=0), trimmed.clamp(max=0)
            self._n_pos = (trimmed > 0).to(torch.int32)
            self._n_neg = (trimmed < 0).to(torch.int32)
            return
        self.total.add_(trimmed)
        self._pos.add_(trimmed.clamp(min=0))
        self._neg.add_(trimmed.clamp(max=0))
        self._n_pos.add_(trimmed > 0)
        self._n_neg.add_(trimmed < 0)

    def result(self, sign: torch.Tensor, agg: str) -> torch.Tensor:
        """The disjoint sum or mean of the entries agreeing with ``sign``."""
        _check_agg(agg)
        if self.total is None:
            raise ValueError("no tensors were added")
        up = sign > 0
        selected = torch.where(up, self._pos, self._neg)
        if agg == "sum":
            return selected
        count = torch.where(up, self._n_pos, self._n_neg).clamp(min=1)
        return selected / count.to(selected.dtype)


def ties_merge_tensor(
    taus: Iterable[torch.Tensor],
    thresholds: Iterable[float],
    majority: float,
    agg: str = "mean",
) -> torch.Tensor:
    """TIES on one parameter tensor, given each task's trim threshold and the majority sign.

    ``taus`` is consumed once, one tensor at a time (it may be a generator of lazy reads).
    """
    _check_agg(agg)
    accumulator = DisjointAccumulator()
    for tau, threshold in zip(taus, thresholds, strict=True):
        accumulator.add(trim_tensor(tau, threshold))
    sign = resolve_zero_signs(torch.sign(accumulator.total), majority)
    return accumulator.result(sign, agg)


def _trimmed(
    vectors: Sequence[Vector], thresholds: Sequence[Mapping[str, float]], name: str
) -> Iterable[torch.Tensor]:
    return (trim_tensor(v[name], thr[name]) for v, thr in zip(vectors, thresholds, strict=True))


def majority_sign(vectors: Sequence[Vector], thresholds: Sequence[Mapping[str, float]]) -> float:
    """``sign(sum over all entries of sign(sum_t trimmed tau_t))``, one tensor at a time."""
    balance = 0
    for name in each_parameter_of(vectors):
        balance += int(elect_sign(_trimmed(vectors, thresholds, name)).to(torch.int64).sum())
    return float((balance > 0) - (balance < 0))


def ties_tensors(
    vectors: Sequence[Vector],
    k: float = 20,
    agg: str = "mean",
    trim_scope: str = "global",
    extra_zeros: int = 0,
) -> Callable[[str], torch.Tensor]:
    """Prepare TIES (the global passes: trim thresholds, majority sign) and return
    ``name -> merged tensor``, computed on call by streaming over the tasks. ``extra_zeros``:
    zero entries added to each task's trim population (:mod:`taskmerge.merging.population`)."""
    _check_agg(agg)
    thresholds = [trim_thresholds(v, k, trim_scope, extra_zeros) for v in vectors]
    majority = majority_sign(vectors, thresholds)

    def merged(name: str) -> torch.Tensor:
        taus = (v[name] for v in vectors)
        return ties_merge_tensor(taus, [thr[name] for thr in thresholds], majority, agg)

    return merged


def ties_merge(
    vectors: Sequence[Vector],
    k: float = 20,
    agg: str = "mean",
    trim_scope: str = "global",
    extra_zeros: int = 0,
) -> dict[str, torch.Tensor]:
    """TIES-merge task vectors (parameter name -> tensor), tensor by tensor.

    Every task vector is read tensor by tensor: twice for its global trim threshold (k < 100),
    once for the majority sign and once for the merge; no tasks x parameters stack is built.

    Args:
        vectors: One mapping per task (in memory or lazy), all with the same parameter names.
        k: Percentage of each task's entries kept by the trim (100: no trim).
        agg: ``"mean"`` (paper, LiNeS) or ``"sum"`` (TALL/Consensus' multi-task vector).
        trim_scope: ``"global"`` (reference: whole task vector) or ``"tensor"``.
        extra_zeros: Zero entries added to each task's trim population (the references' text
            side, :mod:`taskmerge.merging.population`).

    Returns:
        The merged vector, before the scaling coefficient.
    """
    merged = ties_tensors(vectors, k, agg, trim_scope, extra_zeros)
    return {name: merged(name) for name in each_parameter_of(vectors)}


@register_method("ties", scaled=True, lines="multitask")
class Ties(MergeMethod):
    """TIES-merging (arXiv:2306.01708): theta0 + alpha * TIES(tau_1..tau_T), alpha swept.

    Args:
        k: Top-k% kept per task (paper/LiNeS 20, the default; tall_masks' YAML 100).
        agg: ``"mean"`` (default) or ``"sum"``.
        trim_scope: ``"global"`` (default, reference) or ``"tensor"``.
        trim_population: ``"image"`` (default: k% of the image weights) or ``"checkpoint"``
            (the references' population, with the text side's zeros;
            :mod:`taskmerge.merging.population`).
        scaling_coef: Fixed alpha, or None to sweep ``grid``.
        grid: Alphas tried on Val.
    """

    def __init__(
        self,
        k: float = 20,
        agg: Literal["mean", "sum"] = "mean",
        trim_scope: Literal["global", "tensor"] = "global",
        trim_population: TrimPopulation = "image",
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        if agg not in AGGREGATIONS:
            raise ConfigError(f"method.agg must be one of {AGGREGATIONS}, got {agg!r}")
        self.k, self.agg, self.trim_scope = check_percentage("k", k), agg, trim_scope
        self.trim_population = trim_population
        self._kept: float | None = None

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        zeros = population_zeros(self.trim_population, self.text_side_entries)
        self._kept = image_fraction_kept(vector_numel(vectors[0]), self.k, zeros)
        return TaskVector(ties_merge(vectors, self.k, self.agg, self.trim_scope, zeros))

    def details(self) -> dict[str, Any]:
        """The trim population and the fraction of image weights it keeps per task."""
        return trim_details(self.trim_population, self._kept)
