"""PCB-merging: parameter competition balancing (Du et al., NeurIPS 2024, arXiv:2410.02396).

Read from the authors' ``duguodong7/pcb-merging`` ``pcb-merging.py`` (``PCB_merge``, the file
their README names as the method's key steps), matched exactly. With ``T`` tasks, task vectors
``tau_t`` and ``d`` entries per task vector (the WHOLE flattened vector, as the reference):

1. Clamp outliers: ``a_t = clamp(|tau_t|, lo_t, hi_t)`` with ``lo_t`` / ``hi_t`` the entries of
   rank ``int(d * r)`` and ``int(d * (1 - r) - 1)`` (0-based) of the sorted ``|tau_t|``,
   ``r = clamp_ratio`` (1e-4); ``c_t = sign(tau_t) * a_t`` is what gets merged.
2. Intra-balancing: ``exp(T * ((a_t - lo_t) / (hi_t - lo_t))^2)`` (the min-max normalised
   magnitude, squared; the minimum and maximum of ``a_t`` are ``lo_t`` and ``hi_t``).
3. Inter-balancing: ``tanh(tau_t * sum_s tau_s)`` (the UNclamped vectors, as the reference).
4. ``beta_t`` = intra * inter; drop: ``m_t = sorted(beta_t)[int(d * (1 - pcb_ratio))]`` and
   ``w_t = (clamp(beta_t, m_t, max beta_t) - m_t) / (max beta_t - m_t)``: all but the top
   ``pcb_ratio`` of each task's balancing scores get weight 0, the rest a weight in (0, 1].
5. Rescale: ``tau = sum_t c_t w_t / max(sum_t w_t, 1e-12)``; theta0 + lambda * tau, lambda swept.

The authors' vision script (``vision_source_code/pcb.py``) is another variant (clamp ratio 0.01,
inter-balancing against the sum of min-max normalised vectors, ``att_ratio = 0.05``,
``lambda = 1.2``); ``pcb-merging.py`` is followed here. Its lambda grid is the authors'
``run_merging.sh`` PCB sweep (``linear+0.8+2.21+0.1``: 0.8 to 2.2 by 0.1); their per-task
lambdas found by evolutionary search need Val data in the loop and are not part of this
data-free method. Where the reference divides by zero (``hi_t == lo_t``, ``max beta_t == m_t``:
a constant vector) the normalised value is taken as 0 here instead of NaN.

Memory: the order statistics over each task's whole vector are found by an exact radix select
over the bit patterns of the values (signed; as :mod:`taskmerge.merging.streaming` does for
magnitudes), all tasks at once, reading one tensor at a time: two passes for the clamp bounds
(``|tau_t|``), two for the drop thresholds (``beta_t``, which needs the per-parameter sum over
tasks, recomputed in each pass) and one merge pass; histograms of 2^16 bins per bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import (
    Vector,
    each_parameter_of,
    parameter_names,
    release_memory,
    running_sum,
    shape_of,
)
from taskmerge.vectors.task_vector import TaskVector

_DIGIT = 16
_BINS = 1 << _DIGIT
_HALF = _BINS // 2
#: (task index, tensor) pairs over every parameter, one tensor at a time.
Stream = Callable[[], Iterator[tuple[int, torch.Tensor]]]


# --------------------------------------------------------------------------- exact order statistics
def _keys(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """int64 keys ordered like the values: the IEEE bits, negatives' magnitude bits flipped."""
    if width == 64:
        bits = tensor.detach().to(torch.float64).reshape(-1).view(torch.int64)
        flip = 0x7FFFFFFFFFFFFFFF
    else:
        bits = tensor.detach().to(torch.float32).reshape(-1).view(torch.int32).to(torch.int64)
        flip = 0x7FFFFFFF
    return torch.where(bits >= 0, bits, bits ^ flip)


def _value(key: int, width: int) -> float:
    flip = 0x7FFFFFFFFFFFFFFF if width == 64 else 0x7FFFFFFF
    bits = key if key >= 0 else key ^ flip
    if width == 64:
        return float(torch.tensor([bits], dtype=torch.int64).view(torch.float64).item())
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32).item())


def select_ranks(stream: Stream, ranks: Sequence[Sequence[int]]) -> list[list[float]]:
    """``ranks[t][j]``-th smallest (1-based) value of task ``t``'s entries, for every t and j.

    ``stream`` is called once per pass (two passes for float32, four for float64); it yields
    each task's tensors of every parameter, one at a time. Equal to sorting each task's
    concatenated entries, without the copy.
    """
    width = 32
    while True:
        found = _select(stream, ranks, width)
        if found is not None:
            return found
        width = 64  # a float64 tensor appeared: compare everything in float64 (exact)


def _select(stream: Stream, ranks: Sequence[Sequence[int]], width: int) -> list[list[float]] | None:
    prefix = [[0] * len(r) for r in ranks]
    remaining = [list(r) for r in ranks]
    for level in range(width // _DIGIT):
        shift = width - _DIGIT * (level + 1)
        hists = [[np.zeros(_BINS, dtype=np.int64) for _ in r] for r in ranks]
        for task, tensor in stream():
            if width == 32 and tensor.dtype == torch.float64:
                return None
            keys = _keys(tensor, width)
            for j, hist in enumerate(hists[task]):
                if level:
                    sel = keys[(keys >> (shift + _DIGIT)) == prefix[task][j]]
                    digits = (sel >> shift) & (_BINS - 1)
                else:
                    digits = (keys >> shift) + _HALF
                hist += np.bincount(digits.cpu().numpy(), minlength=_BINS)
            del tensor, keys
            release_memory()
        for task, task_hists in enumerate(hists):
            for j, hist in enumerate(task_hists):
                cumulative = np.cumsum(hist)
                rank = remaining[task][j]
                if not 1 <= rank <= int(cumulative[-1]):
                    raise ValueError(f"rank {rank} out of range for {int(cumulative[-1])} entries")
                digit = int(np.searchsorted(cumulative, rank))
                remaining[task][j] = rank - (int(cumulative[digit - 1]) if digit else 0)
                if level:
                    prefix[task][j] = (prefix[task][j] << _DIGIT) | digit
                else:
                    prefix[task][j] = digit - _HALF
    return [[_value(key, width) for key in task_prefix] for task_prefix in prefix]


# --------------------------------------------------------------------------- PCB
def _normalized(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``(x - low) / (high - low)``; 0 where the range is empty (the reference gives NaN)."""
    if high == low:
        return torch.zeros_like(x)
    return (x - low) / (high - low)


def balance_tensor(
    tau: torch.Tensor, total: torch.Tensor, low: float, high: float, num_tasks: int
) -> torch.Tensor:
    """PCB's balancing score of one task on one tensor: intra * inter (steps 2-4)."""
    magnitude = tau.abs().clamp(low, high)
    intra = torch.exp(num_tasks * _normalized(magnitude, low, high) ** 2)
    inter = torch.tanh(tau * total)
    return intra * inter


def clamp_ranks(numel: int, clamp_ratio: float) -> list[int]:
    """1-based ranks of the clamp bounds (the reference's 0-based ``int(d*r)``,
    ``int(d*(1-r)-1)``)."""
    return [int(numel * clamp_ratio) + 1, int(numel * (1 - clamp_ratio) - 1) + 1]


def drop_ranks(numel: int, pcb_ratio: float) -> list[int]:
    """1-based ranks of the drop threshold (``int(d * (1 - pcb_ratio))``) and of the maximum."""
    min_ratio = 1 - pcb_ratio
    return [min(int(numel * min_ratio) + 1, numel), numel]


def pcb_tensors(
    vectors: Sequence[Vector], pcb_ratio: float = 0.1, clamp_ratio: float = 1e-4
) -> Callable[[str], torch.Tensor]:
    """Run PCB's global passes and return ``name -> merged[name]``, computed on call."""
    names = parameter_names(vectors)
    num_tasks = len(vectors)
    numel = sum(int(np.prod(shape_of(vectors[0], name), dtype=np.int64)) for name in names)

    def magnitudes() -> Iterator[tuple[int, torch.Tensor]]:
        for name in names:
            for task, vector in enumerate(vectors):
                yield task, vector[name].abs()

    bounds = select_ranks(magnitudes, [clamp_ranks(numel, clamp_ratio)] * num_tasks)

    def scores() -> Iterator[tuple[int, torch.Tensor]]:
        for name in names:
            total = running_sum(v[name] for v in vectors)
            for task, vector in enumerate(vectors):
                low, high = bounds[task]
                yield task, balance_tensor(vector[name], total, low, high, num_tasks)
            del total

    drops = select_ranks(scores, [drop_ranks(numel, pcb_ratio)] * num_tasks)

    def merged(name: str) -> torch.Tensor:
        total = running_sum(v[name] for v in vectors)
        numerator = denominator = None
        for task, vector in enumerate(vectors):
            tau = vector[name]
            low, high = bounds[task]
            clamped = torch.sign(tau) * tau.abs().clamp(low, high)
            score = balance_tensor(tau, total, low, high, num_tasks)
            threshold, top = drops[task]
            weight = _normalized(score.clamp(threshold, top), threshold, top)
            if numerator is None:
                numerator, denominator = clamped * weight, weight
            else:
                numerator.add_(clamped * weight)
                denominator.add_(weight)
            del tau, clamped, score, weight
        assert numerator is not None and denominator is not None
        return numerator / denominator.clamp(min=1e-12)

    return merged


def pcb_merge(
    vectors: Sequence[Vector], pcb_ratio: float = 0.1, clamp_ratio: float = 1e-4
) -> dict[str, torch.Tensor]:
    """PCB-merge task vectors (parameter name -> tensor, in memory or lazy), tensor by tensor."""
    merged = pcb_tensors(vectors, pcb_ratio, clamp_ratio)
    return {name: merged(name) for name in each_parameter_of(vectors)}


@register_method("pcb", scaled=True, lines="multitask")
class PCBMerging(MergeMethod):
    """PCB-merging (arXiv:2410.02396): theta0 + lambda * balanced, dropped, rescaled average.

    The clamped task vectors are averaged with intra- and inter-balancing weights.

    Args:
        pcb_ratio: Fraction of each task's entries kept by the drop (reference default 0.1).
        clamp_ratio: Fraction of the smallest and of the largest magnitudes of each task
            vector clamped (reference 1e-4).
        scaling_coef: Fixed lambda, or None to sweep ``grid``.
        grid: Lambdas tried on Val (authors' sweep: 0.8 to 2.2 by 0.1).
    """

    def __init__(
        self,
        pcb_ratio: float = 0.1,
        clamp_ratio: float = 1e-4,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        if not 0 < float(pcb_ratio) <= 1:
            raise ConfigError(f"method.pcb_ratio={pcb_ratio} must be a fraction in (0, 1]")
        if not 0 <= float(clamp_ratio) < 0.5:
            raise ConfigError(f"method.clamp_ratio={clamp_ratio} must be a fraction in [0, 0.5)")
        self.pcb_ratio, self.clamp_ratio = float(pcb_ratio), float(clamp_ratio)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        return TaskVector(pcb_merge(vectors, self.pcb_ratio, self.clamp_ratio))
