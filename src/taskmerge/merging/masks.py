"""Binary masks over task vectors: magnitude top-k, TALL masks and consensus.

* Magnitude top-k% masks (the trim of TIES, arXiv:2306.01708, and the ``mag_masking`` baseline of
  Wang et al., arXiv:2405.07813): ``m = |tau| >= threshold`` with the threshold of
  :func:`taskmerge.merging.streaming.magnitude_threshold` (ties at the threshold are kept).
* TALL masks (Wang et al., "Localizing Task Information for Improved Model Merging and
  Compression", arXiv:2405.07813): ``m_t = |tau_t| > lambda * |tau_MTL - tau_t|``, strictly, as
  in ``nik-dim/tall_masks`` ``generate_task_masks`` (``diff_pt_ft > diff_multi_ft * lambda``).
* Consensus (same paper): keep the weights that at least ``prun_thre_k`` TALL masks select.

Masks are stored as packed bits (``numpy.packbits``, big-endian bit order, like the reference's
``np.packbits``), one uint8 tensor per task and parameter in a safetensors file whose metadata
holds the shapes.

Everything works tensor by tensor; a "vector" is a mapping from parameter name to tensor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from taskmerge.checkpoints import atomic_path
from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.merging.streaming import magnitude_threshold
from taskmerge.task_vectors import TaskVector

Vector = Mapping[str, torch.Tensor]
Mask = dict[str, torch.Tensor]

TALL_LAMBDAS = (0.2, 0.3, 0.4, 0.5, 0.6)
TRIM_SCOPES = ("global", "tensor")
MASKS_FORMAT = "taskmerge-packed-masks"


# --------------------------------------------------------------------------- magnitude top-k
def trim_thresholds(vector: Vector, k: float, scope: str = "global") -> dict[str, float]:
    """Per-parameter magnitude thresholds keeping the top ``k``% entries.

    Args:
        vector: Parameter name -> tensor (one task vector).
        k: Percentage kept, in [0, 100]; 100 keeps everything (threshold 0.0).
        scope: ``"global"``: one threshold over the whole vector (the references);
            ``"tensor"``: the top ``k``% of each tensor separately (cheaper variant).
    """
    if scope not in TRIM_SCOPES:
        raise ConfigError(f"trim_scope must be one of {TRIM_SCOPES}, got {scope!r}")
    if scope == "global":
        threshold = magnitude_threshold(list(vector.values()), k)
        return {name: threshold for name in vector}
    return {name: magnitude_threshold([tensor], k) for name, tensor in vector.items()}


def magnitude_mask(vector: Vector, k: float, scope: str = "global") -> Mask:
    """Boolean masks ``|tau| >= threshold`` keeping the top ``k``% magnitudes (ties kept)."""
    thresholds = trim_thresholds(vector, k, scope)
    return {name: tensor.abs() >= thresholds[name] for name, tensor in vector.items()}


def trim(vector: Vector, k: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """The vector with all but its top ``k``% magnitudes zeroed; ``k = 100`` returns it as is."""
    if k == 100:
        return dict(vector)
    masks = magnitude_mask(vector, k, scope)
    return {name: tensor * masks[name] for name, tensor in vector.items()}


def apply_mask(vector: Vector, mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hadamard product ``mask * vector``; parameters missing from ``mask`` are kept whole."""
    return {
        name: tensor * mask[name].to(torch.bool) if name in mask else tensor
        for name, tensor in vector.items()
    }


def sum_vectors(vectors: Sequence[Vector]) -> dict[str, torch.Tensor]:
    """Elementwise sum of vectors with the same parameter names."""
    names = list(vectors[0])
    return {name: torch.stack([v[name] for v in vectors]).sum(0) for name in names}


# --------------------------------------------------------------------------- TALL and consensus
def tall_mask_tensor(tau: torch.Tensor, tau_mtl: torch.Tensor, lam: float) -> torch.Tensor:
    """``|tau_t| > lam * |tau_MTL - tau_t|`` (strict, as the reference), one tensor."""
    return tau.abs() > lam * (tau_mtl - tau).abs()


def tall_masks(vectors: Sequence[Vector], merged: Vector, lam: float) -> list[Mask]:
    """TALL masks of every task for one ``lam`` (arXiv:2405.07813, Eq. for ``m_t``).

    ``merged`` is the multi-task vector tau_MTL (the sum, or TIES); each task's mask compares
    ``|theta_0 - theta_t| = |tau_t|`` with ``lam * |theta_0 + tau_MTL - theta_t|``.
    """
    return [
        {name: tall_mask_tensor(vector[name], merged[name], lam) for name in vector}
        for vector in vectors
    ]


def consensus_mask(masks: Sequence[Mapping[str, torch.Tensor]], prun_thre_k: int) -> Mask:
    """``[sum_t m_t >= prun_thre_k]``: 0 keeps all, 1 drops unused weights, 2 also selfish ones."""
    names = list(masks[0])
    return {
        name: torch.stack([m[name].to(torch.int32) for m in masks]).sum(0) >= prun_thre_k
        for name in names
    }


# --------------------------------------------------------------------------- storage
def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as packed bits (uint8, ``numpy.packbits`` order) of its flattened form."""
    bits = mask.detach().to(torch.bool).reshape(-1).cpu().numpy()
    return torch.from_numpy(np.packbits(bits))


def unpack_mask(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`."""
    count = int(np.prod(shape, dtype=np.int64))
    bits = np.unpackbits(packed.cpu().numpy(), count=count)
    return torch.from_numpy(bits.astype(bool)).reshape(tuple(shape))


def save_masks(
    path: str | Path,
    masks: Mapping[str, Mapping[str, torch.Tensor]],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write per-task masks (task -> parameter -> bool tensor) as packed bits, atomically.

    Tensor ``"<task>/<parameter>"`` holds the packed bits; the metadata holds the shapes, the
    format tag and any extra ``metadata`` (e.g. the lambdas chosen per task).
    """
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for task, mask in masks.items():
        if "/" in task:
            raise ValueError(f"task name {task!r} must not contain '/'")
        for name, value in mask.items():
            key = f"{task}/{name}"
            tensors[key] = pack_mask(value)
            shapes[key] = list(value.shape)
    meta = {str(key): str(value) for key, value in (metadata or {}).items()}
    meta.update(format=MASKS_FORMAT, tasks=json.dumps(list(masks)), shapes=json.dumps(shapes))
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_masks(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read masks written by :func:`save_masks` (task -> parameter -> bool tensor)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mask file {path} does not exist: build the TALL masks first")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("format") != MASKS_FORMAT:
            raise CheckpointError(f"{path} is not a mask file written by taskmerge.save_masks")
        shapes = json.loads(meta["shapes"])
        masks: dict[str, dict[str, torch.Tensor]] = {task: {} for task in json.loads(meta["tasks"])}
        for key in handle.keys():
            task, name = key.split("/", 1)
            masks[task][name] = unpack_mask(handle.get_tensor(key), shapes[key])
    return masks


# --------------------------------------------------------------------------- method classes
def _vectors(task_vectors: Mapping[str, TaskVector]) -> list[Vector]:
    return [tv.vector for tv in task_vectors.values()]


def multitask_vector(
    vectors: Sequence[Vector], use_ties: bool = False, k: float = 100, ties_agg: str = "sum"
) -> dict[str, torch.Tensor]:
    """tau_MTL of the references: sum of top-``k``% trimmed vectors, or TIES (k=20, ``ties_agg``).

    ``use_ties=True`` follows ``nik-dim/tall_masks``: ``ties_merging(reset_thresh=20,
    merge_func="dis-sum")``; ``k`` then is ignored (as in the reference).
    """
    if use_ties:
        from taskmerge.merging.ties import ties_merge  # ties imports this module

        return ties_merge(vectors, k=20, agg=ties_agg)
    return sum_vectors([trim(v, k) for v in vectors])


class MagnitudeMasking(MergeMethod):
    """``mag_masking`` (arXiv:2405.07813 baseline): task t gets theta0 + m_t * sum tau, alpha=1.

    ``m_t`` keeps the top ``k``% magnitudes of tau_t over its whole vector. Default ``k=10`` is
    the reference YAML's (``config/method/mag_masking.yaml``).
    """

    name = "mag_masking"

    def __init__(self, k: float = 10, scaling_coef: float = 1.0) -> None:
        super().__init__(scaling_coef=scaling_coef)
        self.k = k

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return TaskVector(sum_vectors(_vectors(task_vectors)))

    def task_masks(self, task_vectors: Mapping[str, TaskVector]) -> dict[str, Mask]:
        """Task name -> its top-k% mask."""
        return {task: magnitude_mask(tv.vector, self.k) for task, tv in task_vectors.items()}

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        merged = self.merge(task_vectors)
        per_task = {
            task: TaskVector(apply_mask(merged.vector, mask)).apply_to_state_dict(pretrained, 1.0)
            for task, mask in self.task_masks(task_vectors).items()
        }
        yield Candidate({"k": self.k}, per_task=per_task)


class TallMask(MergeMethod):
    """TALL masks (Wang et al., arXiv:2405.07813): task t uses theta0 + m_t * tau_MTL.

    One candidate per ``tall_mask_lambda`` (default grid 0.2..0.6 of the reference); lambda is
    chosen per task on its own Val accuracy. ``use_ties`` builds tau_MTL with TIES (k=20,
    ``ties_agg``, reference default ``"sum"``); otherwise the sum of top-``k``% trimmed task
    vectors (reference default ``k=100``: no trim).
    """

    name = "tall_mask"
    select_per_task = True

    def __init__(
        self,
        tall_mask_lambda: float | Sequence[float] | None = None,
        use_ties: bool = False,
        k: float = 100,
        ties_agg: str = "sum",
    ) -> None:
        super().__init__(scaling_coef=1.0)
        if tall_mask_lambda is None:
            tall_mask_lambda = TALL_LAMBDAS
        if isinstance(tall_mask_lambda, (int, float)):
            tall_mask_lambda = [tall_mask_lambda]
        self.lambdas = [float(lam) for lam in tall_mask_lambda]
        self.use_ties, self.k, self.ties_agg = use_ties, k, ties_agg

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return TaskVector(
            multitask_vector(_vectors(task_vectors), self.use_ties, self.k, self.ties_agg)
        )

    def task_masks(
        self, task_vectors: Mapping[str, TaskVector], lam: float, merged: TaskVector | None = None
    ) -> dict[str, Mask]:
        """Task name -> TALL mask for one lambda."""
        merged = merged if merged is not None else self.merge(task_vectors)
        masks = tall_masks(_vectors(task_vectors), merged.vector, lam)
        return dict(zip(task_vectors, masks, strict=True))

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        merged = self.merge(task_vectors)
        for lam in self.lambdas:
            per_task = {
                task: TaskVector(apply_mask(merged.vector, mask)).apply_to_state_dict(pretrained)
                for task, mask in self.task_masks(task_vectors, lam, merged).items()
            }
            yield Candidate({"tall_mask_lambda": lam}, per_task=per_task)


class Consensus(MergeMethod):
    """Consensus merging (Wang et al., arXiv:2405.07813): tau = [sum_t m_t >= k] * tau_MTL.

    The TALL masks come from ``masks_path`` (written by :func:`save_masks` after the per-task
    lambda selection, as the reference loads them), else are built here with
    ``tall_mask_lambda`` (one value, or task -> value). ``prun_thre_k=2`` (reference default)
    removes weights used by at most one task, 1 only unused ones, 0 none (plain TA / TIES).
    ``use_ties``: tau_MTL and the masks' multi-task vector from TIES (k=20, ``ties_agg``).
    """

    name = "consensus"

    def __init__(
        self,
        prun_thre_k: int = 2,
        use_ties: bool = False,
        k: float = 100,
        ties_agg: str = "sum",
        masks_path: str | None = None,
        tall_mask_lambda: float | Mapping[str, float] = 0.4,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        self.prun_thre_k, self.use_ties, self.k, self.ties_agg = prun_thre_k, use_ties, k, ties_agg
        self.masks_path = masks_path
        self.tall_mask_lambda = tall_mask_lambda

    def _tall_masks(self, task_vectors: Mapping[str, TaskVector], merged: Vector) -> list[Mask]:
        if self.masks_path:
            stored = load_masks(self.masks_path)
            missing = sorted(set(task_vectors) - set(stored))
            if missing:
                raise ConfigError(f"{self.masks_path} has no TALL masks for tasks {missing}")
            return [stored[task] for task in task_vectors]
        lam = self.tall_mask_lambda
        return [
            tall_masks([tv.vector], merged, lam[task] if isinstance(lam, Mapping) else lam)[0]
            for task, tv in task_vectors.items()
        ]

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = _vectors(task_vectors)
        merged = multitask_vector(vectors, self.use_ties, self.k, self.ties_agg)
        mask = consensus_mask(self._tall_masks(task_vectors, merged), self.prun_thre_k)
        return TaskVector(apply_mask(merged, mask))
