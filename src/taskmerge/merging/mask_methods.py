"""Merge methods built on masks: magnitude masking, TALL masks and Consensus (arXiv:2405.07813).

The mask math is :mod:`taskmerge.merging.masks`; where mask files live and how they are
written and read is :mod:`taskmerge.merging.mask_files`. Every class streams over the tasks one
parameter at a time (never the T masks of the whole model at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.io.atomic import write_json
from taskmerge.io.checks import require_keys
from taskmerge.io.packed_masks import MaskFile
from taskmerge.merging.base import (
    Candidate,
    MergeMethod,
    check_non_negative,
    check_percentage,
)
from taskmerge.merging.mask_files import MaskFiles, multitask_tag, read_chosen_lambdas
from taskmerge.merging.masks import (
    Mask,
    Vector,
    magnitude_mask,
    multitask_tensors,
    multitask_vector,
    sum_vectors,
    tall_mask_tensor,
    tall_masks,
)
from taskmerge.merging.population import (
    TrimPopulation,
    image_fraction_kept,
    population_zeros,
    trim_details,
    vector_numel,
)
from taskmerge.merging.registry import register_method
from taskmerge.merging.streaming import trim_thresholds
from taskmerge.merging.tensorwise import (
    DerivedStateDict,
    each_parameter,
    parameter_names,
    shape_of,
)
from taskmerge.vectors.task_vector import TaskVector

MaskSource = Callable[[str, str], torch.Tensor]  # (task, parameter) -> bool tensor

#: The TALL-mask lambdas of the reference, each task choosing its own on Val.
TALL_LAMBDAS = (0.2, 0.3, 0.4, 0.5, 0.6)


#: ``tall_mask_lambda="chosen"``: each task's mask at the lambda it chose on Val.
CHOSEN = "chosen"


def _lambda_of(value: float | Mapping[str, float], task: str) -> float:
    if isinstance(value, Mapping):
        if task not in value:
            raise ConfigError(f"tall_mask_lambda has no value for task {task}: add {task}: <value>")
        return float(value[task])
    return float(value)


def _shapes(vectors: Sequence[Vector], names: Sequence[str]) -> dict[str, torch.Size]:
    return {name: shape_of(vectors[0], name) for name in names}


def _masked(merged: Vector, mask: Callable[[str], torch.Tensor], name: str) -> torch.Tensor | None:
    """``mask(name) * merged[name]``; None for parameters outside the merged vector."""
    if name not in merged:
        return None
    return merged[name] * mask(name).to(torch.bool)


class _StoresMasks(MergeMethod):
    """A method that saves / loads TALL-mask files: ``method.mask_dir``, else the directory the
    caller gives at :meth:`bind` (``main.py``: the checkpoint store's mask folder)."""

    mask_dir: str | None = None
    load_mask: bool = False
    save_mask: bool = True
    _bound_mask_dir: Path | None = None

    def bind(
        self, encoder: nn.Module | None, tasks: Sequence[str], *, mask_dir: Path | None = None
    ) -> MergeMethod:
        """Remember the default mask directory (used when ``mask_dir`` is not set)."""
        self._bound_mask_dir = mask_dir
        return self

    def writes_to(self) -> list[Path]:
        """The mask directory, when computed masks are saved."""
        directory = self.mask_dir or self._bound_mask_dir
        saving = self.save_mask and not self.load_mask and directory is not None
        return [Path(directory)] if saving else []

    def _mask_files(self, task_vectors: Mapping[str, TaskVector], multitask: str) -> MaskFiles:
        directory = self.mask_dir or self._bound_mask_dir
        return MaskFiles(directory, list(task_vectors), self.load_mask, self.save_mask, multitask)


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


@register_method("mag_masking", scaled=False)
class MagnitudeMasking(MergeMethod):
    """``mag_masking`` (arXiv:2405.07813 baseline): task t gets theta0 + m_t * sum tau, alpha=1.

    ``m_t`` keeps the top ``k``% magnitudes of tau_t over its whole vector. Default ``k=10`` is
    the reference YAML's (``config/method/mag_masking.yaml``). The per-task models are built
    when evaluated, each mask from its task's threshold (one float per task is all that is kept).
    """

    per_task_result = True

    def __init__(
        self, k: float = 10, trim_population: TrimPopulation = "image", scaling_coef: float = 1.0
    ) -> None:
        super().__init__(scaling_coef=scaling_coef)
        self.k = check_percentage("k", k)
        self.trim_population = trim_population
        self._kept: float | None = None

    def details(self) -> dict[str, Any]:  # noqa: D102
        return trim_details(self.trim_population, self._kept)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        return TaskVector(sum_vectors(_vectors(task_vectors)))

    def task_masks(self, task_vectors: Mapping[str, TaskVector]) -> dict[str, Mask]:
        """Task name -> its top-k% mask (all T masks: for small inputs)."""
        return {task: magnitude_mask(tv.vector, self.k) for task, tv in task_vectors.items()}

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        zeros = population_zeros(self.trim_population, self.text_side_entries)
        self._kept = image_fraction_kept(vector_numel(_vectors(task_vectors)[0]), self.k, zeros)
        thresholds = {
            task: trim_thresholds(tv.vector, self.k, extra_zeros=zeros)
            for task, tv in task_vectors.items()
        }
        merged = self.merge(task_vectors).vector
        require_keys(list(merged), pretrained)

        def mask_of(task: str, name: str) -> torch.Tensor:
            return task_vectors[task].vector[name].abs() >= thresholds[task][name]

        per_task = {
            task: DerivedStateDict(pretrained, partial(_masked, merged, partial(mask_of, task)))
            for task in task_vectors
        }
        yield Candidate({"k": self.k}, per_task=per_task)  # type: ignore[arg-type]


@register_method("tall_mask", scaled=False)
class TallMask(_StoresMasks):
    """TALL masks (Wang et al., arXiv:2405.07813): task t uses theta0 + m_t * tau_MTL.

    One candidate per ``tall_mask_lambda`` (default grid 0.2..0.6 of the reference); lambda is
    chosen per task on its own Val accuracy. ``use_ties`` builds tau_MTL with TIES (k=20,
    ``ties_agg``, reference default ``"sum"``); otherwise the sum of top-``k``% trimmed task
    vectors (reference default ``k=100``: no trim).

    Saved masks: for each lambda, the masks of all tasks are written (packed bits, one file per
    lambda) as soon as they are computed, to
    ``<mask_dir>/tall_mask-<sum-k100|ties-k20-sum>-lambda<lambda>-<T>tasks-<hash>.safetensors``
    (the hash is of the ordered task list, which the file's metadata also lists).
    ``mask_dir`` defaults to the directory given at :meth:`bind` (``main.py`` gives
    ``<checkpoints>/<model>/<finetuning>/masks``); with neither (e.g. the Python API without
    ``mask_dir``) nothing is written. ``load_mask=True`` reads those files instead of
    recomputing the masks (tau_MTL is still built: the models are theta0 + m_t * tau_MTL); a
    missing file, or one for other tasks, shapes or tau_MTL settings, is an error naming the
    file. Files are not invalidated when checkpoints change: delete them after re-fine-tuning.
    :class:`Consensus` reads and writes the same files.

    Args:
        tall_mask_lambda: One lambda or a list (the per-task selection grid).
        use_ties, k, ties_agg: How tau_MTL is built (see above).
        load_mask: Reload saved masks instead of computing them.
        save_mask: Write computed masks (when a directory is known).
        mask_dir: Where mask files live (None: the directory given at ``bind``, see above).
    """

    per_task_result = True

    select_per_task = True

    def __init__(
        self,
        tall_mask_lambda: float | Sequence[float] | None = None,
        use_ties: bool = False,
        k: float = 100,
        ties_agg: Literal["mean", "sum"] = "sum",
        load_mask: bool = False,
        save_mask: bool = True,
        mask_dir: str | None = None,
        trim_population: TrimPopulation = "image",
    ) -> None:
        super().__init__(scaling_coef=1.0)
        self.trim_population = trim_population
        if tall_mask_lambda is None:
            tall_mask_lambda = TALL_LAMBDAS
        if isinstance(tall_mask_lambda, (int, float)):
            tall_mask_lambda = [tall_mask_lambda]
        if not tall_mask_lambda:
            raise ConfigError("method.tall_mask_lambda is empty: give a value or a list")
        check_non_negative("tall_mask_lambda", tall_mask_lambda)
        self.lambdas = [float(lam) for lam in tall_mask_lambda]
        self.use_ties, self.k, self.ties_agg = use_ties, check_percentage("k", k), ties_agg
        self.load_mask, self.save_mask, self.mask_dir = load_mask, save_mask, mask_dir

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        zeros = population_zeros(self.trim_population, self.text_side_entries)
        return TaskVector(
            multitask_vector(_vectors(task_vectors), self.use_ties, self.k, self.ties_agg, zeros)
        )

    def chosen(self, hyperparameters: Mapping[str, Any], tasks: Sequence[str]) -> None:
        """Record each task's Val-chosen lambda beside the saved masks (what Consensus with
        ``tall_mask_lambda=chosen`` counts), when masks are saved."""
        lambdas = hyperparameters.get("tall_mask_lambda")
        files = self._mask_files(dict.fromkeys(tasks), self.multitask_tag())  # type: ignore[arg-type]
        path = files.chosen_path()
        if isinstance(lambdas, Mapping) and path is not None and (files.saving or self.load_mask):
            write_json({task: float(lambdas[task]) for task in tasks}, path)

    def multitask_tag(self) -> str:
        """How tau_MTL is built (the mask files' name fragment)."""
        return multitask_tag(self.use_ties, self.k, self.ties_agg, self.trim_population)

    def task_masks(
        self, task_vectors: Mapping[str, TaskVector], lam: float, merged: TaskVector | None = None
    ) -> dict[str, Mask]:
        """Task name -> TALL mask for one lambda (all T masks: for small inputs)."""
        merged = merged if merged is not None else self.merge(task_vectors)
        masks = tall_masks(_vectors(task_vectors), merged.vector, lam)
        return dict(zip(task_vectors, masks, strict=True))

    def grid_size(self) -> int:  # noqa: D102 - one candidate per lambda (published: one)
        return len(self.lambdas)

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:  # noqa: D102
        vectors = _vectors(task_vectors)
        names = parameter_names(vectors)
        require_keys(names, pretrained)
        shapes = _shapes(vectors, names)
        tag = multitask_tag(self.use_ties, self.k, self.ties_agg, self.trim_population)
        files = self._mask_files(task_vectors, tag)
        if self.load_mask and files.published is not None:
            published = files.open_published(shapes)  # imported: one mask per task, no lambda
            merged = self.merge(task_vectors).vector
            per_task = {
                task: DerivedStateDict(
                    pretrained, partial(_masked, merged, partial(published.get, task))
                )
                for task in task_vectors
            }
            yield Candidate({"tall_mask_lambda": "published"}, per_task=per_task)  # type: ignore[arg-type]
            return
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


@register_method("consensus", scaled=True, lines="multitask")
class Consensus(_StoresMasks):
    """Consensus merging (Wang et al., arXiv:2405.07813): tau = [sum_t m_t >= k] * tau_MTL.

    ``prun_thre_k=2`` (reference default) removes weights used by at most one task, 1 only
    unused ones, 0 none (plain TA / TIES). ``use_ties``: tau_MTL and the masks' multi-task
    vector from TIES (k=20, ``ties_agg``). The TALL masks, one parameter at a time (never all T
    masks at once), come from:

    * ``masks_path``: a file written by :func:`save_masks` (e.g. per-task selected masks);
    * ``load_mask=True``: the files :class:`TallMask` saved, task t's mask from the file of its
      lambda (``tall_mask_lambda``: one value, or task -> value, e.g. the lambdas ``tall_mask``
      chose); same directory rules and errors as :class:`TallMask`;
    * ``tall_mask_lambda="chosen"`` (``main.py``'s default, the reference's
      ``construct_consensus_mask``): each task's mask at the lambda it chose on its own Val in a
      ``tall_mask`` run (recorded beside the masks; ``main.py`` runs that selection first when
      none is recorded, :mod:`taskmerge.experiment.consensus_masks`);
    * otherwise they are computed here with ``tall_mask_lambda`` and, when it is one value and a
      mask directory is known, saved to the same file ``tall_mask`` would write. The Python
      API, which has no Val split, uses 0.4 unless given ``"chosen"`` (with a recorded run) or
      another value.
    """

    def __init__(
        self,
        prun_thre_k: int = 2,
        use_ties: bool = False,
        k: float = 100,
        ties_agg: Literal["mean", "sum"] = "sum",
        masks_path: str | None = None,
        tall_mask_lambda: float | Mapping[str, float] | Literal["chosen"] = 0.4,
        load_mask: bool = False,
        save_mask: bool = True,
        mask_dir: str | None = None,
        trim_population: TrimPopulation = "image",
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        self.trim_population = trim_population
        if tall_mask_lambda != CHOSEN:
            check_non_negative("tall_mask_lambda", tall_mask_lambda)
        check_non_negative("prun_thre_k", prun_thre_k)
        self.prun_thre_k, self.use_ties, self.ties_agg = prun_thre_k, use_ties, ties_agg
        self.k = check_percentage("k", k)
        self.masks_path = masks_path
        self.tall_mask_lambda = tall_mask_lambda
        self.load_mask, self.save_mask, self.mask_dir = load_mask, save_mask, mask_dir

    def bind(
        self, encoder: nn.Module | None, tasks: Sequence[str], *, mask_dir: Path | None = None
    ) -> MergeMethod:
        """Check ``prun_thre_k`` against the number of tasks (more would keep nothing)."""
        if self.prun_thre_k > len(tasks):
            raise ConfigError(
                f"method.prun_thre_k={self.prun_thre_k} is more than the {len(tasks)} tasks: no "
                f"weight could be kept; use 0..{len(tasks)} (2 drops weights at most one task uses)"
            )
        return super().bind(encoder, tasks, mask_dir=mask_dir)

    def _sources(
        self, task_vectors: Mapping[str, TaskVector], files: MaskFiles, shapes: Mapping
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
        if files.published is not None:  # imported masks, one per task
            return files.open_published(shapes).get
        lambdas = {task: _lambda_of(self.tall_mask_lambda, task) for task in tasks}
        opened = {lam: files.open(lam, shapes) for lam in sorted(set(lambdas.values()))}
        return lambda task, name: opened[lambdas[task]].get(task, name)

    def multitask_tag(self) -> str:
        """How tau_MTL is built (the mask files' name fragment)."""
        return multitask_tag(self.use_ties, self.k, self.ties_agg, self.trim_population)

    def chosen_record(self, tasks: Sequence[str]) -> Path | None:
        """Where a ``tall_mask`` run with these settings records its per-task lambdas."""
        return MaskFiles(self.mask_dir or self._bound_mask_dir, tasks, False, False,
                         self.multitask_tag()).chosen_path()  # fmt: skip

    def use_chosen(self, tasks: Sequence[str]) -> bool:
        """Resolve ``tall_mask_lambda="chosen"`` from a ``tall_mask`` run's record (its masks
        are then loaded when saved, else rebuilt at the chosen lambdas); False: no record."""
        if self.tall_mask_lambda != CHOSEN or self.masks_path:
            return True  # (a masks file holds one mask per task: no lambda is needed)
        path = self.chosen_record(tasks)
        chosen = read_chosen_lambdas(path, tasks) if path is not None else None
        if chosen is None:
            return False
        self.set_lambdas(chosen)
        return True

    def set_lambdas(self, lambdas: Mapping[str, float]) -> None:
        """Use these per-task lambdas (loading the saved masks of each when they exist)."""
        self.tall_mask_lambda = dict(lambdas)
        directory = self.mask_dir or self._bound_mask_dir
        if directory is not None:
            files = MaskFiles(directory, list(lambdas), False, False, self.multitask_tag())
            self.load_mask = all(files.path(lam).is_file() for lam in set(lambdas.values()))

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        if not self.use_chosen(list(task_vectors)):
            raise ConfigError(
                "consensus with tall_mask_lambda=chosen needs the lambdas a tall_mask run chose "
                "per task on Val: run main.py (it runs that selection first), or give "
                "method.tall_mask_lambda=<value> or {Task: value}"
            )
        vectors = _vectors(task_vectors)
        names = parameter_names(vectors)
        shapes = _shapes(vectors, names)
        tag = self.multitask_tag()
        files = self._mask_files(task_vectors, tag)
        stored = self._sources(task_vectors, files, shapes)
        lambdas = (
            {task: _lambda_of(self.tall_mask_lambda, task) for task in task_vectors}
            if stored is None
            else {}
        )
        single = isinstance(self.tall_mask_lambda, (int, float))
        save = stored is None and single and files.saving
        zeros = population_zeros(self.trim_population, self.text_side_entries)
        tau_mtl = multitask_tensors(vectors, self.use_ties, self.k, self.ties_agg, zeros)
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
