"""One merge experiment: task vectors -> candidates -> Val sweep -> selection -> Test -> report.

:func:`run_merge` receives everything it works on (a bound method, the pretrained weights, the
task vectors, an evaluator, the fine-tuned accuracies, a tracker) and is three steps:
:func:`sweep` scores every candidate on Val, a :class:`Selection` keeps the chosen weights, and
:func:`report` evaluates them on Test and writes the results JSON, the plot and the tracker.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from taskmerge.errors import ConfigError
from taskmerge.evaluation import Evaluator, normalized_accuracy, summarize
from taskmerge.grid_edges import grid_edge, swept_key
from taskmerge.merging.base import AffineFamily, Candidate, MergeMethod
from taskmerge.merging.selection import Reference, best_index
from taskmerge.task_vectors import TaskVector, check_same_mode
from taskmerge.tracking import Tracker, plot_sweep, write_results
from taskmerge.versions import versions

log = logging.getLogger(__name__)

StateDict = Mapping[str, Any]
#: Task -> {"val_top1": ..., "test_top1": ...}
Accuracies = Mapping[str, Mapping[str, float]]


# --------------------------------------------------------------------------- inputs
def zeroshot_accuracies(evaluator: Evaluator, pretrained: StateDict) -> dict[str, dict[str, float]]:
    """Split (``val``, ``test``) -> task -> top-1 of the pretrained encoder (cached on disk when
    the evaluator can: computed once, not once per job)."""
    cached = getattr(evaluator, "cached_accuracy", None)
    if cached is not None:
        return {
            split: {t: cached("zeroshot", pretrained, t, split) for t in evaluator.task_names}
            for split in ("val", "test")
        }
    return {
        split: {t: evaluator.accuracy(pretrained, t, split) for t in evaluator.task_names}
        for split in ("val", "test")
    }


def evaluate_candidate(
    evaluator: Evaluator, candidate: Candidate, split: str, finetuned: Mapping[str, float]
) -> dict[str, Any]:
    """Per-task and mean metrics of one candidate on ``split`` (``val`` or ``test``)."""
    accuracies = {
        task: evaluator.accuracy(candidate.for_task(task), task, split)
        for task in evaluator.task_names
    }
    return split_metrics(candidate.hyperparameters, accuracies, split, finetuned)


def split_metrics(
    hyperparameters: Mapping[str, Any],
    accuracies: Mapping[str, float],
    split: str,
    finetuned: Mapping[str, float],
) -> dict[str, Any]:
    """``<split>/<task>/top1``, ``.../normalized_top1`` and their means, from accuracies."""
    metrics: dict[str, Any] = {"hyperparameters": dict(hyperparameters)}
    for task, accuracy in accuracies.items():
        metrics[f"{split}/{task}/top1"] = accuracy
        metrics[f"{split}/{task}/normalized_top1"] = normalized_accuracy(accuracy, finetuned[task])
    for key, value in summarize(accuracies, finetuned).items():
        metrics[f"{split}/avg/{key}"] = value
    return metrics


# --------------------------------------------------------------------------- sweep
def sweep(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    reference: Reference,
    tracker: Tracker | None = None,
) -> Iterator[tuple[Candidate, dict[str, Any]]]:
    """Score each of the method's candidates on Val, in grid order, one in memory at a time.

    Yields ``(candidate, metrics)``; the metrics hold the per-task and mean accuracies, the
    method's derived metrics and ``val/selection_score`` (the method's criterion, None when
    inadmissible). Each point is logged to ``tracker`` with its step.

    When the evaluator scores affine families in one pass (the linearized forward) and the
    method's candidates are one (theta0 + coefficients x directions: one merged vector times a
    coefficient, LiNeS' alpha and beta), every grid point comes from one JVP per direction and
    image instead of one forward per point; otherwise each candidate is evaluated directly.
    """
    family = None
    if getattr(evaluator, "supports_affine", False):
        family = method.affine_family(pretrained, task_vectors)
    points = (
        _affine_points(family, pretrained, evaluator, reference)
        if family is not None
        else _direct_points(method, pretrained, task_vectors, evaluator, reference)
    )
    for step, (candidate, metrics) in enumerate(points):
        metrics.update(method.derived_metrics(metrics, "val", reference))
        metrics["val/selection_score"] = method.score(metrics)
        if tracker is not None:
            hyper = {f"sweep/{k}": v for k, v in candidate.hyperparameters.items()}
            tracker.log(loggable(metrics) | hyper, step=step)
        yield candidate, metrics


def _direct_points(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    reference: Reference,
) -> Iterator[tuple[Candidate, dict[str, Any]]]:
    candidates = method.candidates(pretrained, task_vectors)
    first = next(candidates, None)  # the merge itself (and its checks) before any evaluation
    if first is None:
        return
    for candidate in tqdm(
        itertools.chain([first], candidates), desc=f"{method.name}: Val", leave=False
    ):
        yield candidate, evaluate_candidate(evaluator, candidate, "val", reference.finetuned)


def _affine_points(
    family: AffineFamily, pretrained: StateDict, evaluator: Evaluator, reference: Reference
) -> Iterator[tuple[Candidate, dict[str, Any]]]:
    coefficients = [coefs for _, coefs in family.points]
    per_task = {
        task: evaluator.affine_accuracies(family.directions, coefficients, task, "val")  # type: ignore[attr-defined]
        for task in tqdm(evaluator.task_names, desc="one-pass linearized Val", leave=False)
    }
    for index, (hyperparameters, _) in enumerate(family.points):
        accuracies = {task: values[index] for task, values in per_task.items()}
        metrics = split_metrics(hyperparameters, accuracies, "val", reference.finetuned)
        yield family.candidate(pretrained, index), metrics


# --------------------------------------------------------------------------- selection
@dataclass
class Selection:
    """Keeps the Val-best weights of a sweep as it runs (only those stay in memory).

    Global selection (default): the highest ``val/selection_score``, ties to the first grid
    point. Per-task selection (``per_task=True``, TALL masks): each task keeps the candidate that
    gives it the highest normalized Val accuracy (ties to the earlier one), so the chosen
    hyperparameters are a task -> value table.
    """

    finetuned: Mapping[str, float]
    per_task: bool = False
    curve: list[dict[str, Any]] = field(default_factory=list)
    _best: Candidate | None = None
    _val: dict[str, Any] = field(default_factory=dict)

    def offer(self, candidate: Candidate, metrics: dict[str, Any]) -> None:
        """Record one swept point; keep its weights if they are (so far) the chosen ones."""
        self.curve.append(metrics)
        if self.per_task:
            self._offer_per_task(candidate, metrics)
        elif best_index(self.scores) == len(self.curve) - 1:
            self._best = candidate

    @property
    def scores(self) -> list[float | None]:
        """The selection score of every point so far."""
        return [metrics["val/selection_score"] for metrics in self.curve]

    def result(self, method_name: str) -> tuple[Candidate, dict[str, Any]]:
        """The chosen candidate and its Val metrics.

        Raises:
            ConfigError: no candidate is admissible (e.g. none keeps the control accuracy).
        """
        if not self.curve:
            raise RuntimeError(f"method {method_name} produced no candidate")
        if self.per_task:
            return self._best, self._val  # type: ignore[return-value]
        chosen = best_index(self.scores)
        if chosen is None or self._best is None:
            raise ConfigError(
                f"no {method_name} candidate is admissible on Val (e.g. none keeps the control "
                "accuracy above method.control_threshold): add 0.0 to method.grid or lower the "
                "threshold"
            )
        return self._best, self.curve[chosen]

    def _offer_per_task(self, candidate: Candidate, metrics: dict[str, Any]) -> None:
        if self._best is None:
            self._best = Candidate({}, per_task={})
        chosen, val = self._best, self._val
        for task in self.finetuned:
            key = f"val/{task}/normalized_top1"
            if task not in chosen.per_task or metrics[key] > val[key]:
                chosen.per_task[task] = candidate.for_task(task)
                for name, value in candidate.hyperparameters.items():
                    chosen.hyperparameters.setdefault(name, {})[task] = value
                val[key] = metrics[key]
                val[f"val/{task}/top1"] = metrics[f"val/{task}/top1"]
        accuracies = {t: val[f"val/{t}/top1"] for t in self.finetuned}
        val.update({f"val/avg/{k}": v for k, v in summarize(accuracies, self.finetuned).items()})
        val["hyperparameters"] = chosen.hyperparameters


# --------------------------------------------------------------------------- report
def report(
    method: MergeMethod,
    chosen: Candidate,
    val: Mapping[str, Any],
    curve: Sequence[Mapping[str, Any]],
    evaluator: Evaluator,
    references: Mapping[str, Reference],
    tracker: Tracker,
    run_dir: str | Path,
    info: Mapping[str, Any],
    started: float | None = None,
) -> dict[str, Any]:
    """Evaluate the chosen weights on Test; write ``results.json``, ``sweep.png`` and the
    tracker's summary; return the results (``seconds`` counts from ``started``)."""
    test = evaluate_candidate(evaluator, chosen, "test", references["test"].finetuned)
    test.update(method.derived_metrics(test, "test", references["test"]))
    ft = {split: references[split].finetuned for split in ("val", "test")}
    results = {
        "method": method.name,
        "hyperparameters": chosen.hyperparameters,
        **dict(info),
        "tasks": list(evaluator.task_names),
        "test": _per_task(test, "test", ft["test"]),
        "val": _per_task(val, "val", ft["val"]),
        "sweep": list(curve),
        "finetuned": {t: {"val_top1": ft["val"][t], "test_top1": ft["test"][t]} for t in ft["val"]},
        "versions": versions(),
        "seconds": time.time() - (started if started is not None else time.time()),
        "complete": True,
    }
    details = _method_details(method, val, test, references)
    if details:
        results["report"] = details
    edge = grid_edge(curve, chosen.hyperparameters, method.natural_bounds())
    results["grid_edge"] = edge
    if edge:
        log.warning(
            "%s: the chosen %s=%g is the %s edge of the swept grid, the optimum may lie beyond "
            "it: rerun with %s",
            method.name, edge["key"], edge["value"], edge["edge"], edge["override"],
        )  # fmt: skip
    zeroshot = {split: ref.zeroshot for split, ref in references.items() if ref.zeroshot}
    if zeroshot:
        results["zeroshot"] = {
            t: {"val_top1": zeroshot["val"][t], "test_top1": zeroshot["test"][t]}
            for t in evaluator.task_names
        }
    write_results(results, run_dir)
    key = swept_key(curve)
    plot_sweep(curve, key, Path(run_dir) / "sweep.png", f"{method.name} on Val")
    tracker.log(loggable(test))
    tracker.summary(
        loggable(test)
        | {f"chosen/{k}": v for k, v in chosen.hyperparameters.items()}
        | {
            f"zeroshot/{split}/{t}/top1": acc
            for split, per_task in zeroshot.items()
            for t, acc in per_task.items()
        }
    )
    return results


# --------------------------------------------------------------------------- the experiment
def run_merge(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    finetuned: Accuracies,
    tracker: Tracker,
    run_dir: str | Path,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge, sweep the method's hyperparameters on Val, evaluate the chosen one on Test.

    Args:
        method: A bound merge method (:meth:`MergeMethod.bind`).
        pretrained: The pretrained encoder's state dict.
        task_vectors: Task -> task vector, in the evaluator's task order.
        evaluator: Scores weights on the tasks' Val and Test splits.
        finetuned: Task -> fine-tuned ``val_top1`` / ``test_top1`` (measured by this project:
            normalized accuracy divides by them).
        tracker: Where metrics are logged.
        run_dir: Where ``results.json`` and ``sweep.png`` go.
        info: Extra top-level results entries (model, fine-tuning mode, config...).

    The selection criterion is the method's :meth:`~MergeMethod.score`: by default the mean
    normalized Val accuracy; ties go to the first grid point.
    """
    start = time.time()
    tasks = evaluator.task_names
    if list(task_vectors) != list(tasks):
        raise ConfigError(f"task vectors {list(task_vectors)} do not match the tasks {tasks}")
    check_same_mode(task_vectors)
    zeroshot = zeroshot_accuracies(evaluator, pretrained) if method.needs_zeroshot else None
    references = {
        split: Reference(
            tasks, {t: finetuned[t][f"{split}_top1"] for t in tasks}, (zeroshot or {}).get(split)
        )
        for split in ("val", "test")
    }
    selection = Selection(references["val"].finetuned, per_task=method.select_per_task)
    for candidate, metrics in sweep(
        method, pretrained, task_vectors, evaluator, references["val"], tracker
    ):
        selection.offer(candidate, metrics)
    chosen, val = selection.result(method.name)
    return report(
        method,
        chosen,
        val,
        selection.curve,
        evaluator,
        references,
        tracker,
        run_dir,
        info or {},
        started=start,
    )


def loggable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics a tracker takes: no hyperparameters, no inadmissible (None) scores."""
    return {k: v for k, v in metrics.items() if k != "hyperparameters" and v is not None}


def _method_details(
    method: MergeMethod,
    val: Mapping[str, Any],
    test: Mapping[str, Any],
    references: Mapping[str, Reference],
) -> dict[str, Any]:
    """The method's details and derived metrics at the chosen point (e.g. target vs control)."""
    details: dict[str, Any] = dict(method.details())
    for split, metrics in (("val", val), ("test", test)):
        derived = method.derived_metrics(metrics, split, references[split])
        if derived:
            details[split] = {k.removeprefix(f"{split}/"): v for k, v in derived.items()}
    return details


def _per_task(metrics: Mapping[str, Any], split: str, finetuned: Mapping[str, float]) -> dict:
    table = {
        task: {
            "top1": metrics[f"{split}/{task}/top1"],
            "normalized_top1": metrics[f"{split}/{task}/normalized_top1"],
            "finetuned_top1": finetuned[task],
        }
        for task in finetuned
    }
    table["avg"] = {
        "top1": metrics[f"{split}/avg/top1"],
        "normalized_top1": metrics[f"{split}/avg/normalized_top1"],
    }
    return table
