"""DARE: drop and rescale task vectors, then task arithmetic or TIES (Yu et al., "Language
Models are Super Mario", ICML 2024, arXiv:2311.03099).

Each task vector entry is dropped with probability ``p`` and the survivors are multiplied by
``1 / (1 - p)`` (``rescale``), so the expected vector is unchanged; the dropped vectors are then
summed (``dare``) or TIES-merged (``dare_ties``), and theta0 + alpha * merged, alpha swept.

Read from FusionBench (``tanganke/fusion_bench`` ``fusion_bench/method/dare/``: ``utils.py``
``param_random_drop_``, ``task_arithmetic.py``, ``ties_merging.py``), matched: an entry is kept
where a uniform draw is ``> p`` (``torch.rand_like(x) > p``), its value is ``(x * mask) / (1 - p)``;
``only_on_linear_weights`` drops only the weights of ``nn.Linear`` modules (other parameters are
summed undropped); DARE-TIES trims each dropped vector to its top-``k``% (over the whole vector)
and elects signs exactly as :mod:`taskmerge.merging.ties`, with FusionBench's defaults
(``threshold: 20``, ``merge_func: sum``).

**Mask seed convention** (FusionBench draws every mask from the global generator in parameter
order, so its masks depend on the order and number of tensors read). Here the mask of the task
named ``task`` (its name in the task list, e.g. ``MNIST``; the pure functions below default to
the task's position ``"0"``, ``"1"``, ... when given no names) on parameter ``name`` is::

    g = torch.Generator().manual_seed(mask_seed(seed, task, name))
    keep = torch.rand(shape, generator=g, dtype=torch.float32) > p

with ``mask_seed = int.from_bytes(sha256(f"{seed}/{task}/{name}").digest()[:8], "little") >> 1``
(a 63-bit seed), drawn on the CPU. A mask is therefore a pure function of (seed, task name,
parameter name, shape): the same on every read of a lazy task vector, in any streaming order
(TIES reads each vector four times), on rerun, in memory or lazy, whatever the order of the
task list and whichever other tasks are merged. To compare with FusionBench, give its
``param_random_drop_`` these masks.

Memory: a dropped vector is a view computing ``vector[name]`` and its mask on each lookup
(:class:`DroppedVector`); the merges stream over it like any lazy vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.merging.base import MergeMethod, check_percentage
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import (
    Vector,
    VectorView,
    each_parameter_of,
    running_sum,
)
from taskmerge.vectors.task_vector import TaskVector

SEED_CONVENTION = (
    "mask of task `task` (its name) on parameter `name`: "
    "torch.rand(shape, generator=torch.Generator().manual_seed(s), dtype=float32) > p, "
    "s = int.from_bytes(sha256(f'{seed}/{task}/{name}').digest()[:8], 'little') >> 1"
)


def mask_seed(seed: int, task: str, name: str) -> int:
    """The 63-bit generator seed of one task's mask on one parameter (see the module doc)."""
    digest = hashlib.sha256(f"{seed}/{task}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def keep_mask(shape: Sequence[int], p: float, seed: int, task: str, name: str) -> torch.Tensor:
    """DARE's boolean keep mask (``rand > p``) of one task on one parameter, always the same."""
    generator = torch.Generator().manual_seed(mask_seed(seed, task, name))
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float32) > p


def drop_and_rescale(
    tau: torch.Tensor, p: float, rescale: bool, seed: int, task: str, name: str
) -> torch.Tensor:
    """``(tau * keep) / (1 - p)`` (FusionBench's order of operations); a new tensor."""
    if p == 0:
        return tau.clone()
    dropped = tau * keep_mask(tau.shape, p, seed, task, name).to(tau.device)
    return dropped / (1 - p) if rescale else dropped


class DroppedVector(VectorView):
    """A task vector with DARE applied on each lookup (in memory or lazy underneath).

    Args:
        vector: The task vector (parameter name -> tensor).
        task: Its task name (part of the mask seed).
        p: Drop probability.
        rescale: Multiply the kept entries by ``1 / (1 - p)``.
        seed: The run's DARE seed.
        names: Only these parameters are dropped (None: all); the others pass through.
    """

    def __init__(
        self,
        vector: Vector,
        task: str,
        p: float,
        rescale: bool,
        seed: int,
        names: Collection[str] | None = None,
    ) -> None:
        super().__init__(vector)
        self._task = task
        self._p, self._rescale, self._seed, self._names = p, rescale, seed, names

    def __getitem__(self, name: str) -> torch.Tensor:
        tau = self._vector[name]
        if self._names is not None and name not in self._names:
            return tau
        return drop_and_rescale(tau, self._p, self._rescale, self._seed, self._task, name)


def dropped_vectors(
    vectors: Sequence[Vector],
    p: float,
    rescale: bool = True,
    seed: int = 0,
    names: Collection[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> list[DroppedVector]:
    """Every task vector with DARE applied lazily, seeded by its task name (``tasks``; default
    its position as a string)."""
    keys = list(tasks) if tasks is not None else [str(i) for i in range(len(vectors))]
    if len(keys) != len(vectors) or len(set(keys)) != len(keys):
        raise ValueError(f"need one distinct task name per vector, got {keys}")
    return [
        DroppedVector(v, key, p, rescale, seed, names) for v, key in zip(vectors, keys, strict=True)
    ]


def dare_sum(
    vectors: Sequence[Vector],
    p: float,
    rescale: bool = True,
    seed: int = 0,
    names: Collection[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """DARE + task arithmetic: the sum of the dropped vectors, tensor by tensor."""
    dropped = dropped_vectors(vectors, p, rescale, seed, names, tasks)
    return {name: running_sum(v[name] for v in dropped) for name in each_parameter_of(dropped)}


def dare_ties(
    vectors: Sequence[Vector],
    p: float,
    rescale: bool = True,
    seed: int = 0,
    k: float = 20,
    agg: str = "sum",
    names: Collection[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """DARE + TIES: TIES-merging (trim top-``k``%, elect, disjoint ``agg``) of the dropped
    vectors, tensor by tensor."""
    from taskmerge.merging.ties import ties_tensors  # here: keeps the registry order

    dropped = dropped_vectors(vectors, p, rescale, seed, names, tasks)
    merged = ties_tensors(dropped, k, agg)
    return {name: merged(name) for name in each_parameter_of(dropped)}


def linear_weight_names(encoder: nn.Module) -> set[str]:
    """State-dict names of the weights of the ``nn.Linear`` modules (FusionBench's
    ``only_on_linear_weights``: ``MultiheadAttention.in_proj_weight`` is not one)."""
    return {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, module in encoder.named_modules()
        if isinstance(module, nn.Linear)
    }


class _Dare(MergeMethod):
    """The shared options of the DARE methods."""

    def __init__(
        self,
        p: float,
        rescale: bool,
        seed: int,
        only_on_linear_weights: bool,
        scaling_coef: float | None,
        grid: Sequence[float] | None,
    ) -> None:
        super().__init__(scaling_coef=scaling_coef, grid=grid)
        if not 0 <= float(p) < 1:
            raise ConfigError(f"method.p={p} must be a drop probability in [0, 1)")
        self.p, self.rescale, self.seed = float(p), bool(rescale), int(seed)
        self.only_on_linear_weights = bool(only_on_linear_weights)
        self._names: set[str] | None = None

    def bind(
        self, encoder: nn.Module | None, tasks: Sequence[str], *, mask_dir: Path | None = None
    ) -> MergeMethod:
        """Find the ``nn.Linear`` weights when ``only_on_linear_weights`` (needs the encoder)."""
        if self.only_on_linear_weights:
            if encoder is None:
                raise ConfigError(
                    "method.only_on_linear_weights=true needs the model to find its nn.Linear "
                    "weights: set it false when merging bare state dicts"
                )
            self._names = linear_weight_names(encoder)
        return self

    def _drop_names(self) -> set[str] | None:
        if self.only_on_linear_weights and self._names is None:
            raise ConfigError(
                "method.only_on_linear_weights=true: call bind(encoder, tasks) before merging"
            )
        return self._names

    def details(self) -> dict[str, Any]:  # noqa: D102
        return {"dare": {"seed": self.seed, "p": self.p, "mask_seed": SEED_CONVENTION}}


@register_method("dare", scaled=True, lines="multitask")
class DareTaskArithmetic(_Dare):
    """DARE + task arithmetic (arXiv:2311.03099): theta0 + alpha * sum_t DARE_p(tau_t).

    Args:
        p: Drop probability (FusionBench ``sparsity_ratio``; default 0.5 as its YAML).
        rescale: Multiply the kept entries by 1 / (1 - p) (default true).
        seed: Seeds every mask (see the module docstring); recorded in results.json.
        only_on_linear_weights: Drop only ``nn.Linear`` weights (FusionBench option).
        scaling_coef: Fixed alpha (FusionBench's YAML: 0.3), or None to sweep ``grid``.
        grid: Alphas tried on Val.
    """

    def __init__(
        self,
        p: float = 0.5,
        rescale: bool = True,
        seed: int = 0,
        only_on_linear_weights: bool = False,
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(p, rescale, seed, only_on_linear_weights, scaling_coef, grid)

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors, tasks = [tv.vector for tv in task_vectors.values()], list(task_vectors)
        names = self._drop_names()
        return TaskVector(dare_sum(vectors, self.p, self.rescale, self.seed, names, tasks))


@register_method("dare_ties", scaled=True, lines="multitask")
class DareTies(_Dare):
    """DARE + TIES-merging (arXiv:2311.03099, 2306.01708): theta0 + alpha * TIES(DARE_p(tau)).

    Args:
        p: Drop probability (default 0.5, FusionBench).
        rescale: Multiply the kept entries by 1 / (1 - p) (default true).
        seed: Seeds every mask (see the module docstring); recorded in results.json.
        only_on_linear_weights: Drop only ``nn.Linear`` weights (FusionBench option).
        k: TIES' top-k% kept per task (FusionBench ``threshold: 20``).
        agg: TIES' disjoint ``"sum"`` (FusionBench ``merge_func: sum``, default) or ``"mean"``.
        scaling_coef: Fixed alpha (FusionBench's YAML: 0.5), or None to sweep ``grid``.
        grid: Alphas tried on Val.
    """

    def __init__(
        self,
        p: float = 0.5,
        rescale: bool = True,
        seed: int = 0,
        only_on_linear_weights: bool = False,
        k: float = 20,
        agg: Literal["sum", "mean"] = "sum",
        scaling_coef: float | None = None,
        grid: Sequence[float] | None = None,
    ) -> None:
        super().__init__(p, rescale, seed, only_on_linear_weights, scaling_coef, grid)
        if agg not in ("sum", "mean"):
            raise ConfigError(f"method.agg must be one of ('sum', 'mean'), got {agg!r}")
        self.k, self.agg = check_percentage("k", k), agg

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors, tasks = [tv.vector for tv in task_vectors.values()], list(task_vectors)
        names = self._drop_names()
        return TaskVector(
            dare_ties(vectors, self.p, self.rescale, self.seed, self.k, self.agg, names, tasks)
        )
