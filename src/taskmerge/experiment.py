"""One merge experiment: task vectors -> candidates -> Val selection -> Test -> results."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from taskmerge.evaluation import normalized_accuracy, select_best, summarize
from taskmerge.merging.base import Candidate, MergeMethod
from taskmerge.task_vectors import TaskVector
from taskmerge.tracking import Tracker, plot_sweep, write_results
from taskmerge.versions import versions
from taskmerge.workspace import Workspace

log = logging.getLogger(__name__)


def build_task_vectors(workspace: Workspace) -> dict[str, TaskVector]:
    """One task vector per task, from the fine-tuned checkpoints."""
    return {
        task: TaskVector.from_state_dicts(
            workspace.pretrained, workspace.finetuned_state_dict(task)
        )
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


def run_merge(
    workspace: Workspace,
    method: MergeMethod,
    tracker: Tracker,
    run_dir: str | Path,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge, sweep the method's hyperparameters on Val, evaluate the chosen one on Test.

    The selection criterion is the mean normalized Val accuracy (merged / fine-tuned top-1 of
    the same task, both measured here); ties go to the first grid point.
    """
    start = time.time()
    workspace.ensure_finetuned()
    finetuned = {t: workspace.finetuned_metrics(t) for t in workspace.task_names}
    ft_val = {t: m["val_top1"] for t, m in finetuned.items()}
    ft_test = {t: m["test_top1"] for t, m in finetuned.items()}
    task_vectors = build_task_vectors(workspace)

    curve: list[dict[str, Any]] = []
    best_candidate: Candidate | None = None
    per_task_best: tuple[Candidate, dict[str, Any]] | None = None
    candidates = method.candidates(workspace.pretrained, task_vectors)
    for step, candidate in enumerate(
        tqdm(candidates, desc=f"{method.name}: Val sweep", leave=False)
    ):
        metrics = evaluate_candidate(workspace, candidate, "val", ft_val)
        curve.append(metrics)
        tracker.log(
            {k: v for k, v in metrics.items() if k != "hyperparameters"}
            | {f"sweep/{k}": v for k, v in candidate.hyperparameters.items()},
            step=step,
        )
        if method.select_per_task:
            per_task_best = _update_per_task_best(per_task_best, candidate, metrics, ft_val)
        elif select_best([c["val/avg/normalized_top1"] for c in curve]) == len(curve) - 1:
            best_candidate = candidate  # keep only the best weights in memory
    if best_candidate is None and per_task_best is None:
        raise RuntimeError(f"method {method.name} produced no candidate")
    if method.select_per_task:
        best_candidate, chosen_val = per_task_best
        curve_at_choice = chosen_val
    else:
        chosen = select_best([c["val/avg/normalized_top1"] for c in curve])
        curve_at_choice = curve[chosen]
    test = evaluate_candidate(workspace, best_candidate, "test", ft_test)

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
    write_results(results, run_dir)
    plot_sweep(curve, "scaling_coef", Path(run_dir) / "sweep.png", f"{method.name} on Val")
    tracker.log({k: v for k, v in test.items() if k != "hyperparameters"})
    tracker.summary(
        {k: v for k, v in test.items() if k != "hyperparameters"}
        | {f"chosen/{k}": v for k, v in best_candidate.hyperparameters.items()}
    )
    return results


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
