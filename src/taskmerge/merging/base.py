"""The merge-method interface: a method turns task vectors into candidate encoders.

Besides ``merge`` / ``candidates``, a method has three hooks the experiment calls:
:meth:`MergeMethod.bind` (read the model's structure and the task list before any long work),
:meth:`MergeMethod.derived_metrics` (extra metrics of an evaluated candidate) and
:meth:`MergeMethod.score` (the Val criterion; default: mean normalized accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.io.tensors import StateDict
from taskmerge.merging.tensorwise import DerivedStateDict
from taskmerge.metrics import Reference, SplitMetrics
from taskmerge.vectors.task_vector import TaskVector

#: A method's derived metrics of one candidate (``target/top1``: names without the split).
Derived = Mapping[str, float]
#: A candidate's hyperparameters.
Hyper = Mapping[str, Any]


@dataclass
class Candidate:
    """One hyperparameter setting and the encoder weights it gives.

    ``per_task`` holds one state dict per task for methods whose result is a model per task;
    otherwise ``shared`` serves every task.
    """

    hyperparameters: dict[str, Any]
    shared: StateDict | None = None
    per_task: dict[str, StateDict] = field(default_factory=dict)

    def for_task(self, task: str) -> StateDict:
        """The weights to evaluate ``task`` with."""
        if task in self.per_task:
            return self.per_task[task]
        if self.shared is None:
            raise KeyError(f"candidate has no weights for task {task}")
        return self.shared


@dataclass
class AffineFamily:
    """Candidates of the form theta0 + sum_k c_k d_k: the directions and one coefficient tuple
    per candidate, in grid order.

    Through the linearized forward the features of such a candidate are f0 + sum_k c_k J d_k,
    so the whole grid is scored from one JVP per direction
    (:meth:`taskmerge.evaluate.evaluator.TaskEvaluator.affine_accuracies`).
    """

    directions: list[dict[str, torch.Tensor]]
    points: list[tuple[dict[str, Any], tuple[float, ...]]]

    def candidate(self, pretrained: Mapping[str, torch.Tensor], index: int) -> Candidate:
        """The weights of point ``index``, computed one tensor per lookup."""
        hyperparameters, coefficients = self.points[index]

        def delta(name: str) -> torch.Tensor | None:
            terms = [
                c * d[name].float()
                for c, d in zip(coefficients, self.directions, strict=True)
                if name in d
            ]
            return sum(terms[1:], terms[0]) if terms else None

        return Candidate(dict(hyperparameters), DerivedStateDict(pretrained, delta))


@dataclass
class GridSource:
    """A method's grid built one point on request, from a merge done once: every point's
    hyperparameters (in grid order) and a function giving the weights of point ``index``.

    :meth:`MergeMethod.candidates` is this grid in order; the adaptive sweep
    (:mod:`taskmerge.experiment.adaptive`) asks for the points it evaluates only.
    """

    points: list[dict[str, Any]]
    weights: Callable[[int], StateDict]

    def __len__(self) -> int:
        return len(self.points)

    def candidate(self, index: int) -> Candidate:
        """The candidate of grid point ``index``."""
        return Candidate(dict(self.points[index]), self.weights(index))


def check_percentage(name: str, value: float) -> float:
    """A percentage in (0, 100] (the k of top-k% masks), or a one-line error."""
    if not 0 < float(value) <= 100:
        raise ConfigError(f"method.{name}={value} must be a percentage in (0, 100]")
    return float(value)


def check_non_negative(name: str, values: Any) -> None:
    """Every value (a number, a list or a task -> value mapping) is at least 0."""
    if isinstance(values, Mapping):
        items = list(values.values())
    elif isinstance(values, Sequence) and not isinstance(values, str):
        items = list(values)
    else:
        items = [values]
    bad = [v for v in items if float(v) < 0]
    if bad:
        raise ConfigError(f"method.{name} has negative values {bad}: use values >= 0")


class MergeMethod:
    """Base class: ``merge`` combines task vectors; the coefficient is applied once, at the end.

    Args:
        scaling_coef: A fixed coefficient; ``None`` sweeps ``grid`` on Val.
        grid: Coefficients tried on Val when ``scaling_coef`` is None.
    """

    name = "method"
    #: Choose the hyperparameter per task on that task's own Val split (TALL masks), instead of
    #: one value for all tasks by the mean normalized accuracy.
    select_per_task = False
    #: The selection rule or the report needs the pretrained encoder's accuracies.
    needs_zeroshot = False
    #: Its candidates hold one model per task (evaluated each on its own task), not one model.
    per_task_result = False
    #: Entries of the references' checkpoints besides the image tower (the text side's leftovers),
    #: for ``trim_population="checkpoint"`` (:mod:`taskmerge.merging.population`); None: unknown.
    text_side_entries: int | None = None
    #: It learns from data (:mod:`taskmerge.merging.data_methods`): ``attach`` gives it.
    needs_data = False

    def __init__(self, scaling_coef: float | None = None, grid: Sequence[float] | None = None):
        if grid is not None and len(grid) == 0:
            raise ConfigError("method.grid is empty: give at least one value, e.g. [0.3]")
        self.scaling_coef = scaling_coef
        self.grid = [float(g) for g in grid] if grid else [1.0]

    def coefficients(self) -> list[float]:
        """The coefficients to try: the fixed one, or the grid."""
        return [float(self.scaling_coef)] if self.scaling_coef is not None else self.grid

    def grid_size(self) -> int:
        """How many candidates :meth:`candidates` yields (the Val sweep's length)."""
        return len(self.coefficients())

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:
        """Combine the task vectors into one (before scaling)."""
        raise NotImplementedError

    def bind(
        self, encoder: nn.Module | None, tasks: Sequence[str], *, mask_dir: Path | None = None
    ) -> MergeMethod:
        """Check the method against the model and the task list; return the method to run.

        Called before any long work. ``encoder`` is the module whose state dict is merged
        (None when only state dicts are known); ``mask_dir`` is where methods that store masks
        keep them unless configured otherwise (``main.py``: the checkpoint store's mask
        folder). The default needs none of them.
        """
        return self

    def writes_to(self) -> list[Path]:
        """The directories this (bound) method will write files into (checked writable before
        any long work); default none."""
        return []

    def chosen(self, hyperparameters: Mapping[str, Any], tasks: Sequence[str]) -> None:
        """Called with the Val-chosen hyperparameters once the sweep has chosen (e.g. TALL
        masks record each task's lambda for Consensus); default nothing."""

    def set_text_side(self, entries: int | None) -> None:
        """Tell the method how many text-side entries the references' checkpoints of this model
        hold (see :mod:`taskmerge.merging.population`)."""
        self.text_side_entries = entries

    def derived_metrics(self, metrics: SplitMetrics, reference: Reference) -> dict[str, float]:
        """Extra metrics of an evaluated candidate (e.g. ``target/top1``, names without the
        split), from its accuracies and the split's references; default none."""
        return {}

    def score(self, metrics: SplitMetrics, derived: Derived, hyper: Hyper) -> float | None:
        """The Val criterion maximised by the sweep (ties: first grid point); None excludes the
        candidate. Default: the mean normalized accuracy."""
        return metrics.mean_normalized

    def details(self) -> dict[str, Any]:
        """What the results JSON should record about the method beyond its hyperparameters."""
        return {}

    def learned_coefficients(self) -> dict[str, Any] | None:
        """Coefficients the method learned (``coefficients``: tasks x layers, ``tasks``,
        ``layers``), saved and plotted with the results; default none."""
        return None

    def natural_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Swept hyperparameter -> the (low, high) values a grid cannot usefully go beyond (None:
        unbounded). A chosen value on a grid edge that is not such a bound is reported: the
        optimum may lie beyond it. Default: a coefficient is at least 0."""
        return {"scaling_coef": (0.0, None)}

    def _default_grid(self) -> bool:
        """Its candidates are theta0 + coefficient * merge(task vectors), one per coefficient
        (it overrides neither :meth:`candidates` nor :meth:`grid_source`)."""
        cls = type(self)
        return (
            cls.candidates is MergeMethod.candidates and cls.grid_source is MergeMethod.grid_source
        )

    def affine_family(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> AffineFamily | None:
        """The candidates as theta0 + coefficient * merged vector, or None when this method's
        candidates are not of that form (it overrides :meth:`candidates`)."""
        if not self._default_grid():
            return None
        merged = dict(self.merge(task_vectors).vector)
        points = [({"scaling_coef": coef}, (coef,)) for coef in self.coefficients()]
        return AffineFamily([merged], points)

    def grid_source(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> GridSource | None:
        """The grid, any point built on request after one merge (theta0 + coefficient * merged
        vector by default); None when the candidates are not one grid over a single swept
        hyperparameter (the method overrides :meth:`candidates`: a model per task, no sweep)."""
        if type(self).candidates is not MergeMethod.candidates:
            return None
        merged = self.merge(task_vectors)
        coefs = self.coefficients()
        return GridSource(
            [{"scaling_coef": coef} for coef in coefs],
            lambda index: merged.apply_to_state_dict(pretrained, coefs[index]),
        )

    def candidates(
        self, pretrained: Mapping[str, Any], task_vectors: Mapping[str, TaskVector]
    ) -> Iterator[Candidate]:
        """Yield the candidates of :meth:`grid_source` in grid order, built lazily (one in
        memory at a time)."""
        source = self.grid_source(pretrained, task_vectors)
        if source is None:  # pragma: no cover - None only where candidates is overridden
            raise NotImplementedError(f"method {self.name} has no grid")
        for index in range(len(source)):
            yield source.candidate(index)
