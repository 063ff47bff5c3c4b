"""One merge experiment: task vectors -> candidates -> Val selection -> Test -> results."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from taskmerge.errors import ConfigError
from taskmerge.evaluation import normalized_accuracy, summarize
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.merging.selection import Reference, best_index
from taskmerge.task_vectors import TaskVector
from taskmerge.tracking import Tracker, plot_sweep, write_results
from taskmerge.versions import versions
from taskmerge.workspace import Workspace

log = logging.getLogger(__name__)


def build_task_vectors(workspace: Workspace) -> dict[str, TaskVector]:
    """One lazy task vector per task: each checkpoint is checked now (header only) and read one
    tensor at a time by the merge, so memory does not grow with the number of tasks."""
    return {
        task: TaskVector.lazy(workspace.pretrained, workspace.finetuned_checkpoint(task))
        for task in workspace.task_names
    }


def evaluate_candidate(
    workspace: Workspace, candidate: Candidate, split: str, finetuned: Mapping[str, float]
) -> dict[str, Any]:
    """Per-task and mean metrics of one candidate on ``split`` (``val`` or ``test``)."""
    accuracies = {
        task: workspace.accuracy(candidate.for_task(task), task, split)
        for task in workspace.task_names
    }
    metrics: dict[str, Any] = {"hyperparameters": candidate.hyperparameters}
    for task, accuracy in accuracies.items():
        metrics[f"{split}/{task}/top1"] = accuracy
        metrics[f"{split}/{task}/normalized_top1"] = normalized_accuracy(accuracy, finetuned[task])
    for key, value in summarize(accuracies, finetuned).items():
        metrics[f"{split}/avg/{key}"] = value
    return metrics


def zeroshot_accuracies(workspace: Workspace) -> dict[str, dict[str, float]]:
    """Split (``val``, ``test``) -> task -> top-1 of the pretrained encoder.

    Computed per run, only for methods that need it (as cheap as one sweep point per split).
    """
    return {
        split: {t: workspace.accuracy(workspace.pretrained, t, split) for t in workspace.task_names}
        for split in ("val", "test")
    }


def run_merge(
    workspace: Workspace,
    method: MergeMethod,
    tracker: Tracker,
    run_dir: str | Path,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge, sweep the method's hyperparameters on Val, evaluate the chosen one on Test.

    The selection criterion is the method's :meth:`~MergeMethod.score`: by default the mean
    normalized Val accuracy (merged / fine-tuned top-1 of the same task, both measured here);
    ties go to the first grid point.
    """
    start = time.time()
    method = method.bind(workspace.bundle.visual, workspace.task_names)
    workspace.ensure_finetuned()
    finetuned = {t: workspace.finetuned_metrics(t) for t in workspace.task_names}
    ft_val = {t: m["val_top1"] for t, m in finetuned.items()}
    ft_test = {t: m["test_top1"] for t, m in finetuned.items()}
    zeroshot = zeroshot_accuracies(workspace) if method.needs_zeroshot else None
    reference = {
        split: Reference(workspace.task_names, ft, zeroshot[split] if zeroshot else None)
        for split, ft in (("val", ft_val), ("test", ft_test))
    }
    task_vectors = build_task_vectors(workspace)

    curve: list[dict[str, Any]] = []
    scores: list[float | None] = []
    best_candidate: Candidate | None = None
    per_task_best: tuple[Candidate, dict[str, Any]] | None = None
    candidates = method.candidates(workspace.pretrained, task_vectors)
    for step, candidate in enumerate(
        tqdm(candidates, desc=f"{method.name}: Val sweep", leave=False)
    ):
        metrics = evaluate_candidate(workspace, candidate, "val", ft_val)
        metrics.update(method.derived_metrics(metrics, "val", reference["val"]))
        metrics["val/selection_score"] = method.score(metrics)
        curve.append(metrics)
        scores.append(metrics["val/selection_score"])
        tracker.log(
            _loggable(metrics) | {f"sweep/{k}": v for k, v in candidate.hyperparameters.items()},
            step=step,
        )
        if method.select_per_task:
            per_task_best = _update_per_task_best(per_task_best, candidate, metrics, ft_val)
        elif best_index(scores) == len(scores) - 1:
            best_candidate = candidate  # keep only the best weights in memory
    if not curve:
        raise RuntimeError(f"method {method.name} produced no candidate")
    if method.select_per_task:
        best_candidate, curve_at_choice = per_task_best
    else:
        chosen = best_index(scores)
        if chosen is None:
            raise ConfigError(
                f"no {method.name} candidate is admissible on Val (e.g. none keeps the control "
                "accuracy above method.control_threshold): add 0.0 to method.grid or lower the "
                "threshold"
            )
        curve_at_choice = curve[chosen]
    test = evaluate_candidate(workspace, best_candidate, "test", ft_test)
    test.update(method.derived_metrics(test, "test", reference["test"]))

    results = {
        "method": method.name,
        "hyperparameters": best_candidate.hyperparameters,
        "model": workspace.bundle.name,
        "pretrained": workspace.bundle.pretrained,
        "finetuning": workspace.settings.finetuning.name,
        "tasks": workspace.task_names,
        "test": _per_task(test, "test", ft_test),
        "val": _per_task(curve_at_choice, "val", ft_val),
        "sweep": curve,
        "finetuned": {t: {"val_top1": ft_val[t], "test_top1": ft_test[t]} for t in ft_val},
        "config": dict(config or {}),
        "versions": versions(),
        "seconds": time.time() - start,
        "complete": True,
    }
    report = _report(method, curve_at_choice, test, reference)
    if report:
        results["report"] = report
    if zeroshot:
        results["zeroshot"] = {
            t: {"val_top1": zeroshot["val"][t], "test_top1": zeroshot["test"][t]}
            for t in workspace.task_names
        }
    write_results(results, run_dir)
    key = _swept_key(curve)
    plot_sweep(curve, key, Path(run_dir) / "sweep.png", f"{method.name} on Val")
    tracker.log(_loggable(test))
    tracker.summary(
        _loggable(test)
        | {f"chosen/{k}": v for k, v in best_candidate.hyperparameters.items()}
        | {
            f"zeroshot/{split}/{t}/top1": acc
            for split, per_task in (zeroshot or {}).items()
            for t, acc in per_task.items()
        }
    )
    return results


def _loggable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics a tracker takes: no hyperparameters, no inadmissible (None) scores."""
    return {k: v for k, v in metrics.items() if k != "hyperparameters" and v is not None}


def _report(
    method: MergeMethod,
    val: Mapping[str, Any],
    test: Mapping[str, Any],
    reference: Mapping[str, Reference],
) -> dict[str, Any]:
    """The method's details and derived metrics at the chosen point (e.g. target vs control)."""
    report: dict[str, Any] = dict(method.details())
    for split, metrics in (("val", val), ("test", test)):
        derived = method.derived_metrics(metrics, split, reference[split])
        if derived:
            report[split] = {k.removeprefix(f"{split}/"): v for k, v in derived.items()}
    return report


def _swept_key(curve: list[dict[str, Any]]) -> str:
    """The first hyperparameter that varies along the sweep (what the plot's x-axis shows)."""
    for key in curve[0]["hyperparameters"]:
        if len({repr(c["hyperparameters"].get(key)) for c in curve}) > 1:
            return key
    return "scaling_coef"


def _update_per_task_best(
    best: tuple[Candidate, dict[str, Any]] | None,
    candidate: Candidate,
    metrics: dict[str, Any],
    finetuned: Mapping[str, float],
) -> tuple[Candidate, dict[str, Any]]:
    """Per task, keep the candidate's weights if they beat that task's best Val accuracy so far
    (ties keep the earlier grid point)."""
    if best is None:
        best = (Candidate({}, per_task={}), {})
    chosen, val = best
    for task in finetuned:
        key = f"val/{task}/normalized_top1"
        if task not in chosen.per_task or metrics[key] > val[key]:
            chosen.per_task[task] = candidate.for_task(task)
            for name, value in candidate.hyperparameters.items():
                chosen.hyperparameters.setdefault(name, {})[task] = value
            val[key] = metrics[key]
            val[f"val/{task}/top1"] = metrics[f"val/{task}/top1"]
    accuracies = {t: val[f"val/{t}/top1"] for t in finetuned}
    val.update({f"val/avg/{k}": v for k, v in summarize(accuracies, finetuned).items()})
    val["hyperparameters"] = chosen.hyperparameters
    return chosen, val


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
