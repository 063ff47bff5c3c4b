"""Binary masks over task vectors: magnitude top-k, TALL masks and consensus.

* Magnitude top-k% masks (the trim of TIES, arXiv:2306.01708, and the ``mag_masking`` baseline of
  Wang et al., arXiv:2405.07813): ``m = |tau| >= threshold`` with the threshold of
  :func:`taskmerge.merging.streaming.magnitude_threshold` (ties at the threshold are kept).
* TALL masks (Wang et al., "Localizing Task Information for Improved Model Merging and
  Compression", arXiv:2405.07813): ``m_t = |tau_t| > lambda * |tau_MTL - tau_t|``, strictly, as
  in ``nik-dim/tall_masks`` ``generate_task_masks`` (``diff_pt_ft > diff_multi_ft * lambda``).
* Consensus (same paper): keep the weights that at least ``prun_thre_k`` TALL masks select.

Masks are stored as packed bits (:mod:`taskmerge.merging.mask_store`). TALL masks are saved
when computed and reloaded with ``load_mask=True``; see :class:`TallMask` for where.

Everything works tensor by tensor, streaming over the tasks: a "vector" is a mapping from
parameter name to tensor, in memory or lazy (:mod:`taskmerge.merging.tensorwise`). The helpers
that return one mask per task (:func:`tall_masks`, ``task_masks``) are for small inputs; the
method classes never hold more than one parameter's masks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.merging.mask_store import (
    MASKS_FORMAT,
    MaskFile,
    load_masks,
    mask_writer,
    pack_mask,
    save_masks,
    tasks_digest,
    unpack_mask,
)
from taskmerge.merging.streaming import TRIM_SCOPES, trim_thresholds
from taskmerge.merging.tensorwise import (
    DerivedStateDict,
    each_parameter,
    parameter_names,
    running_sum,
    shape_of,
)
from taskmerge.merging.ties import ties_tensors, trim_tensor
from taskmerge.task_vectors import TaskVector

__all__ = [
    "MASKS_FORMAT",
    "TALL_LAMBDAS",
    "TRIM_SCOPES",
    "Consensus",
    "MagnitudeMasking",
    "MaskFile",
    "TallMask",
    "apply_mask",
    "consensus_mask",
    "load_masks",
    "magnitude_mask",
    "multitask_tensors",
    "multitask_vector",
    "pack_mask",
    "save_masks",
    "sum_vectors",
    "tall_mask_path",
    "tall_mask_tensor",
    "tall_masks",
    "trim",
    "trim_thresholds",
    "unpack_mask",
]

Vector = Mapping[str, torch.Tensor]
Mask = dict[str, torch.Tensor]
MaskSource = Callable[[str, str], torch.Tensor]  # (task, parameter) -> bool tensor

TALL_LAMBDAS = (0.2, 0.3, 0.4, 0.5, 0.6)


# --------------------------------------------------------------------------- magnitude top-k
def magnitude_mask(vector: Vector, k: float, scope: str = "global") -> Mask:
    """Boolean masks ``|tau| >= threshold`` keeping the top ``k``% magnitudes (ties kept)."""
    thresholds = trim_thresholds(vector, k, scope)
    return {name: vector[name].abs() >= thresholds[name] for name in vector}


def trim(vector: Vector, k: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """The vector with all but its top ``k``% magnitudes zeroed; ``k = 100`` returns it as is."""
    thresholds = trim_thresholds(vector, k, scope)
    return {name: trim_tensor(vector[name], thresholds[name]) for name in vector}


def apply_mask(vector: Vector, mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hadamard product ``mask * vector``; parameters missing from ``mask`` are kept whole."""
    return {
        name: tensor * mask[name].to(torch.bool) if name in mask else tensor
        for name, tensor in vector.items()
    }


def sum_vectors(vectors: Sequence[Vector]) -> dict[str, torch.Tensor]:
    """Elementwise sum of vectors with the same parameter names, tensor by tensor."""
    return {
        name: running_sum(v[name] for v in vectors)
        for name in each_parameter(parameter_names(vectors))
    }


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
    vectors: Sequence[Vector], use_ties: bool = False, k: float = 100, ties_agg: str = "sum"
) -> Callable[[str], torch.Tensor]:
    """Prepare tau_MTL and return ``name -> tau_MTL[name]``, computed on call over the tasks.

    tau_MTL of the references: the sum of top-``k``% trimmed vectors, or (``use_ties=True``,
    ``nik-dim/tall_masks``' ``ties_merging(reset_thresh=20, merge_func="dis-sum")``) TIES with
    k=20 and ``ties_agg``; ``k`` is then ignored, as in the reference. The global passes (trim
    thresholds, TIES' majority sign) run here, once.
    """
    if use_ties:
        return ties_tensors(vectors, k=20, agg=ties_agg)
    thresholds = [trim_thresholds(v, k) for v in vectors]

    def summed(name: str) -> torch.Tensor:
        return running_sum(
            trim_tensor(v[name], thr[name]) for v, thr in zip(vectors, thresholds, strict=True)
        )

    return summed


def multitask_vector(
    vectors: Sequence[Vector], use_ties: bool = False, k: float = 100, ties_agg: str = "sum"
) -> dict[str, torch.Tensor]:
    """tau_MTL as a dict (see :func:`multitask_tensors`)."""
    tensor = multitask_tensors(vectors, use_ties, k, ties_agg)
    return {name: tensor(name) for name in each_parameter(parameter_names(vectors))}


# --------------------------------------------------------------------------- mask files
def multitask_tag(use_ties: bool, k: float, ties_agg: str) -> str:
    """How tau_MTL is built, as a file-name fragment (``sum-k100``, ``ties-k20-sum``)."""
    return f"ties-k20-{ties_agg}" if use_ties else f"sum-k{k:g}"


def tall_mask_path(directory: str | Path, tasks: Sequence[str], lam: float, multitask: str) -> Path:
    """``<directory>/tall_mask-<multitask>-lambda<lam>-<T>tasks-<hash of the task list>``."""
    name = f"tall_mask-{multitask}-lambda{lam:g}-{len(tasks)}tasks-{tasks_digest(tasks)}"
    return Path(directory).expanduser() / f"{name}.safetensors"


def default_mask_dir(task_vectors: Mapping[str, TaskVector]) -> Path | None:
    """``<checkpoints>/<model>/<finetuning>/masks`` when every task vector is read lazily from
    ``<checkpoints>/<model>/<finetuning>/<Task>/finetuned.safetensors``; else None."""
    roots = {
        Path(tv.vector.path).parent.parent  # type: ignore[attr-defined]
        for tv in task_vectors.values()
        if tv.is_lazy
    }
    if len(roots) != 1 or not all(tv.is_lazy for tv in task_vectors.values()):
        return None
    return roots.pop() / "masks"


def _lambda_of(value: float | Mapping[str, float], task: str) -> float:
    if isinstance(value, Mapping):
        if task not in value:
            raise ConfigError(f"tall_mask_lambda has no value for task {task}: add {task}: <value>")
        return float(value[task])
    return float(value)


def _shapes(vectors: Sequence[Vector], names: Sequence[str]) -> dict[str, torch.Size]:
    return {name: shape_of(vectors[0], name) for name in names}


def _check_keys(names: Sequence[str], pretrained: Mapping[str, Any]) -> None:
    missing = sorted(set(names) - set(pretrained))
    if missing:
        raise ValueError(f"the model has no parameters named {missing[:3]}")


def _masked(merged: Vector, mask: Callable[[str], torch.Tensor], name: str) -> torch.Tensor | None:
    """``mask(name) * merged[name]``; None for parameters outside the merged vector."""
    if name not in merged:
        return None
    return merged[name] * mask(name).to(torch.bool)


class _MaskFiles:
    """Where one method's TALL masks live, and how they are written / reloaded.

    Args:
        mask_dir: The directory (``method.mask_dir``); None: next to the checkpoints (lazy task
            vectors), else no file.
        load_mask, save_mask: The method's switches.
        multitask: :func:`multitask_tag` of the method.
    """

    def __init__(
        self,
        mask_dir: str | None,
        task_vectors: Mapping[str, TaskVector],
        load_mask: bool,
        save_mask: bool,
        multitask: str,
    ) -> None:
        self.directory = Path(mask_dir).expanduser() if mask_dir else default_mask_dir(task_vectors)
        self.tasks = list(task_vectors)
        self.load, self.save, self.multitask = load_mask, save_mask, multitask
        if load_mask and self.directory is None:
            raise ConfigError(
                "method.load_mask=true needs the directory of saved masks: set method.mask_dir "
                "(it defaults to <checkpoints>/<model>/<finetuning>/masks only for task vectors "
                "read from checkpoint files)"
            )

    def path(self, lam: float) -> Path:
        """The file of the TALL masks for one lambda."""
        assert self.directory is not None
        return tall_mask_path(self.directory, self.tasks, lam, self.multitask)

    @property
    def saving(self) -> bool:
        """Whether computed masks are written to disk."""
        return self.save and not self.load and self.directory is not None

    def open(self, lam: float, shapes: Mapping[str, torch.Size]) -> MaskFile:
        """The saved masks for ``lam``, checked against the tasks, shapes and tau_MTL recipe."""
        return MaskFile(
            self.path(lam),
            self.tasks,
            shapes,
            exact_tasks=True,
            expected={"tall_mask_lambda": f"{lam:g}", "multitask": self.multitask},
            fix="run once with method.load_mask=false (same tasks, model and tau_MTL settings) "
            "to build and save them, or set method.load_mask=false",
        )

    def writer(self, lam: float, shapes: Mapping[str, torch.Size]):  # noqa: ANN201
        """A :func:`mask_writer` for ``lam`` (parameter-major order), or a no-op context."""
        if not self.saving:
            return nullcontext(None)
        entries = [(task, name, shape) for name, shape in shapes.items() for task in self.tasks]
        metadata = {"tall_mask_lambda": f"{lam:g}", "multitask": self.multitask}
        return mask_writer(self.path(lam), self.tasks, entries, metadata)


def write_tall_masks(
    write: Callable[[str, str, torch.Tensor], None],
    task_vectors: Mapping[str, TaskVector],
    merged: Vector,
    lam: float,
) -> None:
    """Compute every task's TALL mask for ``lam`` and write it, one parameter at a time."""
    for name in each_parameter(merged):
        tau_mtl = merged[name]
        for task, tv in task_vectors.items():
            write(task, name, tall_mask_tensor(tv.vector[name], tau_mtl, lam))


# --------------------------------------------------------------------------- method classes
def _vectors(task_vectors: Mapping[str, TaskVector]) -> list[Vector]:
    return [tv.vector for tv in task_vectors.values()]


class MagnitudeMasking(MergeMethod):
    """``mag_masking`` (arXiv:2405.07813 baseline): task t gets theta0 + m_t * sum tau, alpha=1.

    ``m_t`` keeps the top ``k``% magnitudes of tau_t over its whole vector. Default ``k=10`` is
    the reference YAML's (``config/method/mag_masking.yaml``). The per-task models are built
    when evaluated, each mask from its task's threshold (one float per task is all that is kept).
    """

    name = "mag_masking"

    def __init__(self, k: float = 10, scaling_coef: float = 1.0) -> None:
        super().__init__(scaling_coef=scaling_coef)
        self.k = k

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return TaskVector(sum_vectors(_vectors(task_vectors)))

    def task_masks(self, task_vectors: Mapping[str, TaskVector]) -> dict[str, Mask]:
        """Task name -> its top-k% mask (all T masks: for small inputs)."""
        return {task: magnitude_mask(tv.vector, self.k) for task, tv in task_vectors.items()}

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        thresholds = {task: trim_thresholds(tv.vector, self.k) for task, tv in task_vectors.items()}
        merged = self.merge(task_vectors).vector
        _check_keys(list(merged), pretrained)

        def mask_of(task: str, name: str) -> torch.Tensor:
            return task_vectors[task].vector[name].abs() >= thresholds[task][name]

        per_task = {
            task: DerivedStateDict(pretrained, partial(_masked, merged, partial(mask_of, task)))
            for task in task_vectors
        }
        yield Candidate({"k": self.k}, per_task=per_task)  # type: ignore[arg-type]


class TallMask(MergeMethod):
    """TALL masks (Wang et al., arXiv:2405.07813): task t uses theta0 + m_t * tau_MTL.

    One candidate per ``tall_mask_lambda`` (default grid 0.2..0.6 of the reference); lambda is
    chosen per task on its own Val accuracy. ``use_ties`` builds tau_MTL with TIES (k=20,
    ``ties_agg``, reference default ``"sum"``); otherwise the sum of top-``k``% trimmed task
    vectors (reference default ``k=100``: no trim).

    Saved masks: for each lambda, the masks of all tasks are written (packed bits, one file per
    lambda) as soon as they are computed, to
    ``<mask_dir>/tall_mask-<sum-k100|ties-k20-sum>-lambda<lambda>-<T>tasks-<hash>.safetensors``
    (the hash is of the ordered task list, which the file's metadata also lists).
    ``mask_dir`` defaults to ``<checkpoints>/<model>/<finetuning>/masks`` when the task vectors
    come from checkpoint files (``main.py``); with in-memory task vectors (the Python API) and
    no ``mask_dir`` nothing is written. ``load_mask=True`` reads those files instead of
    recomputing the masks (tau_MTL is still built: the models are theta0 + m_t * tau_MTL); a
    missing file, or one for other tasks, shapes or tau_MTL settings, is an error naming the
    file. Files are not invalidated when checkpoints change: delete them after re-fine-tuning.
    :class:`Consensus` reads and writes the same files.

    Args:
        tall_mask_lambda: One lambda or a list (the per-task selection grid).
        use_ties, k, ties_agg: How tau_MTL is built (see above).
        load_mask: Reload saved masks instead of computing them.
        save_mask: Write computed masks (when a directory is known).
        mask_dir: Where mask files live (None: next to the checkpoints, see above).
    """

    name = "tall_mask"
    select_per_task = True

    def __init__(
        self,
        tall_mask_lambda: float | Sequence[float] | None = None,
        use_ties: bool = False,
        k: float = 100,
        ties_agg: str = "sum",
        load_mask: bool = False,
        save_mask: bool = True,
        mask_dir: str | None = None,
    ) -> None:
        super().__init__(scaling_coef=1.0)
        if tall_mask_lambda is None:
            tall_mask_lambda = TALL_LAMBDAS
        if isinstance(tall_mask_lambda, (int, float)):
            tall_mask_lambda = [tall_mask_lambda]
        self.lambdas = [float(lam) for lam in tall_mask_lambda]
        self.use_ties, self.k, self.ties_agg = use_ties, k, ties_agg
        self.load_mask, self.save_mask, self.mask_dir = load_mask, save_mask, mask_dir

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return TaskVector(
            multitask_vector(_vectors(task_vectors), self.use_ties, self.k, self.ties_agg)
        )

    def task_masks(
        self, task_vectors: Mapping[str, TaskVector], lam: float, merged: TaskVector | None = None
    ) -> dict[str, Mask]:
        """Task name -> TALL mask for one lambda (all T masks: for small inputs)."""
        merged = merged if merged is not None else self.merge(task_vectors)
        masks = tall_masks(_vectors(task_vectors), merged.vector, lam)
        return dict(zip(task_vectors, masks, strict=True))

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        vectors = _vectors(task_vectors)
        names = parameter_names(vectors)
        _check_keys(names, pretrained)
        shapes = _shapes(vectors, names)
        tag = multitask_tag(self.use_ties, self.k, self.ties_agg)
        files = _MaskFiles(self.mask_dir, task_vectors, self.load_mask, self.save_mask, tag)
        loaded = {lam: files.open(lam, shapes) for lam in self.lambdas} if self.load_mask else {}
        merged = self.merge(task_vectors).vector
        for lam in self.lambdas:
            source: MaskSource
            if self.load_mask:
                source = loaded[lam].get
            elif files.saving:
                with files.writer(lam, shapes) as write:
                    write_tall_masks(write, task_vectors, merged, lam)
                source = MaskFile(files.path(lam)).get
            else:
                source = partial(_tall_mask_of, task_vectors, merged, lam)
            per_task = {
                task: DerivedStateDict(pretrained, partial(_masked, merged, partial(source, task)))
                for task in task_vectors
            }
            yield Candidate({"tall_mask_lambda": lam}, per_task=per_task)  # type: ignore[arg-type]


def _tall_mask_of(
    task_vectors: Mapping[str, TaskVector], merged: Vector, lam: float, task: str, name: str
) -> torch.Tensor:
    return tall_mask_tensor(task_vectors[task].vector[name], merged[name], lam)


class Consensus(MergeMethod):
    """Consensus merging (Wang et al., arXiv:2405.07813): tau = [sum_t m_t >= k] * tau_MTL.

    ``prun_thre_k=2`` (reference default) removes weights used by at most one task, 1 only
    unused ones, 0 none (plain TA / TIES). ``use_ties``: tau_MTL and the masks' multi-task
    vector from TIES (k=20, ``ties_agg``). The TALL masks, one parameter at a time (never all T
    masks at once), come from:

    * ``masks_path``: a file written by :func:`save_masks` (e.g. per-task selected masks);
    * ``load_mask=True``: the files :class:`TallMask` saved, task t's mask from the file of its
      lambda (``tall_mask_lambda``: one value, or task -> value, e.g. the lambdas ``tall_mask``
      chose); same directory rules and errors as :class:`TallMask`;
    * otherwise they are computed here with ``tall_mask_lambda`` and, when it is one value and a
      mask directory is known, saved to the same file ``tall_mask`` would write.
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
        load_mask: bool = False,
        save_mask: bool = True,
        mask_dir: str | None = None,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        self.prun_thre_k, self.use_ties, self.k, self.ties_agg = prun_thre_k, use_ties, k, ties_agg
        self.masks_path = masks_path
        self.tall_mask_lambda = tall_mask_lambda
        self.load_mask, self.save_mask, self.mask_dir = load_mask, save_mask, mask_dir

    def _sources(
        self, task_vectors: Mapping[str, TaskVector], files: _MaskFiles, shapes: Mapping
    ) -> MaskSource | None:
        """Where stored masks come from (checked now, before any long work); None: compute."""
        tasks = list(task_vectors)
        if self.masks_path:
            stored = MaskFile(
                self.masks_path,
                tasks,
                shapes,
                fix="point method.masks_path at masks of these tasks (written by save_masks)",
            )
            return stored.get
        if not self.load_mask:
            return None
        lambdas = {task: _lambda_of(self.tall_mask_lambda, task) for task in tasks}
        opened = {lam: files.open(lam, shapes) for lam in sorted(set(lambdas.values()))}
        return lambda task, name: opened[lambdas[task]].get(task, name)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = _vectors(task_vectors)
        names = parameter_names(vectors)
        shapes = _shapes(vectors, names)
        tag = multitask_tag(self.use_ties, self.k, self.ties_agg)
        files = _MaskFiles(self.mask_dir, task_vectors, self.load_mask, self.save_mask, tag)
        stored = self._sources(task_vectors, files, shapes)
        lambdas = {task: _lambda_of(self.tall_mask_lambda, task) for task in task_vectors}
        single = isinstance(self.tall_mask_lambda, (int, float))
        save = stored is None and single and files.saving
        tau_mtl = multitask_tensors(vectors, self.use_ties, self.k, self.ties_agg)
        merged: dict[str, torch.Tensor] = {}
        writer = files.writer(float(self.tall_mask_lambda), shapes) if save else nullcontext()
        with writer as write:
            for name in each_parameter(names):
                mtl = tau_mtl(name)
                count = torch.zeros(mtl.shape, dtype=torch.int32)
                for task, tv in task_vectors.items():
                    if stored is None:
                        mask = tall_mask_tensor(tv.vector[name], mtl, lambdas[task])
                    else:
                        mask = stored(task, name)
                    if write is not None:
                        write(task, name, mask)
                    count += mask
                merged[name] = mtl * (count >= self.prun_thre_k)
        return TaskVector(merged)
