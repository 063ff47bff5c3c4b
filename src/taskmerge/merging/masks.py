"""Mask math over task vectors: magnitude top-k, TALL masks, consensus, the multi-task vector.

* Magnitude top-k% masks (the trim of TIES, arXiv:2306.01708, and the ``mag_masking`` baseline of
  Wang et al., arXiv:2405.07813): ``m = |tau| >= threshold`` with the threshold of
  :func:`taskmerge.merging.streaming.magnitude_threshold` (ties at the threshold are kept).
* TALL masks (Wang et al., "Localizing Task Information for Improved Model Merging and
  Compression", arXiv:2405.07813): ``m_t = |tau_t| > lambda * |tau_MTL - tau_t|``, strictly, as
  in ``nik-dim/tall_masks`` ``generate_task_masks`` (``diff_pt_ft > diff_multi_ft * lambda``).
* Consensus (same paper): keep the weights that at least ``prun_thre_k`` TALL masks select.

Everything works tensor by tensor, streaming over the tasks: a "vector" is a mapping from
parameter name to tensor, in memory or lazy (:mod:`taskmerge.merging.tensorwise`). The helpers
that return one mask per task (:func:`tall_masks`) are for small inputs; the method classes
(:mod:`taskmerge.merging.mask_methods`) never hold more than one parameter's masks. Mask files
are :mod:`taskmerge.merging.mask_files`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from taskmerge.merging.streaming import trim_thresholds
from taskmerge.merging.tensorwise import (
    each_parameter,
    each_parameter_of,
    parameter_names,
    running_sum,
)
from taskmerge.merging.ties import ties_tensors, trim_tensor

Vector = Mapping[str, torch.Tensor]
Mask = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- magnitude top-k
def magnitude_mask(vector: Vector, k: float, scope: str = "global") -> Mask:
    """Boolean masks ``|tau| >= threshold`` keeping the top ``k``% magnitudes (ties kept)."""
    thresholds = trim_thresholds(vector, k, scope)
    return {name: vector[name].abs() >= thresholds[name] for name in vector}


def trim(vector: Vector, k: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """The vector with all but its top ``k``% magnitudes zeroed; ``k = 100`` returns it as is."""
    thresholds = trim_thresholds(vector, k, scope)
    return {name: trim_tensor(vector[name], thresholds[name]) for name in vector}


def sum_vectors(vectors: Sequence[Vector]) -> dict[str, torch.Tensor]:
    """Elementwise sum of vectors with the same parameter names, tensor by tensor."""
    return {name: running_sum(v[name] for v in vectors) for name in each_parameter_of(vectors)}


# --------------------------------------------------------------------------- TALL and consensus
def tall_mask_tensor(tau: torch.Tensor, tau_mtl: torch.Tensor, lam: float) -> torch.Tensor:
    """``|tau_t| > lam * |tau_MTL - tau_t|`` (strict, as the reference), one tensor."""
    scaled = (tau_mtl - tau).abs_().mul_(lam)  # one buffer for the right-hand side
    return tau.abs() > scaled


def tall_masks(vectors: Sequence[Vector], merged: Vector, lam: float) -> list[Mask]:
    """TALL masks of every task for one ``lam`` (arXiv:2405.07813, Eq. for ``m_t``); holds all
    T masks, so for small inputs (the methods stream instead).

    ``merged`` is the multi-task vector tau_MTL (the sum, or TIES); each task's mask compares
    ``|theta_0 - theta_t| = |tau_t|`` with ``lam * |theta_0 + tau_MTL - theta_t|``.
    """
    return [
        {name: tall_mask_tensor(vector[name], merged[name], lam) for name in vector}
        for vector in vectors
    ]


def consensus_mask(masks: Sequence[Mapping[str, torch.Tensor]], prun_thre_k: int) -> Mask:
    """``[sum_t m_t >= prun_thre_k]``: 0 keeps all, 1 drops unused weights, 2 also selfish ones.

    Counted tensor by tensor, one task's mask at a time.
    """
    return {
        name: running_sum(m[name].to(torch.int32) for m in masks) >= prun_thre_k
        for name in each_parameter(parameter_names(masks))
    }


def multitask_tensors(
    vectors: Sequence[Vector],
    use_ties: bool = False,
    k: float = 100,
    ties_agg: str = "sum",
    extra_zeros: int = 0,
) -> Callable[[str], torch.Tensor]:
    """Prepare tau_MTL and return ``name -> tau_MTL[name]``, computed on call over the tasks.

    tau_MTL of the references: the sum of top-``k``% trimmed vectors, or (``use_ties=True``,
    ``nik-dim/tall_masks``' ``ties_merging(reset_thresh=20, merge_func="dis-sum")``) TIES with
    k=20 and ``ties_agg``; ``k`` is then ignored, as in the reference. The global passes (trim
    thresholds, TIES' majority sign) run here, once. ``extra_zeros``: zero entries added to each
    trim's population (:mod:`taskmerge.merging.population`).
    """
    if use_ties:
        return ties_tensors(vectors, k=20, agg=ties_agg, extra_zeros=extra_zeros)
    thresholds = [trim_thresholds(v, k, extra_zeros=extra_zeros) for v in vectors]

    def summed(name: str) -> torch.Tensor:
        return running_sum(
            trim_tensor(v[name], thr[name]) for v, thr in zip(vectors, thresholds, strict=True)
        )

    return summed


def multitask_vector(
    vectors: Sequence[Vector],
    use_ties: bool = False,
    k: float = 100,
    ties_agg: str = "sum",
    extra_zeros: int = 0,
) -> dict[str, torch.Tensor]:
    """tau_MTL as a dict (see :func:`multitask_tensors`)."""
    tensor = multitask_tensors(vectors, use_ties, k, ties_agg, extra_zeros)
    return {name: tensor(name) for name in each_parameter_of(vectors)}
