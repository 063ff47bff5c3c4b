"""``results.json``: a merge outcome as the results file (and what the tracker summarises)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskmerge.experiment.records import (
    derived_record,
    loggable,
    per_task_table,
    point_record,
    split_record,
    zeroshot_log,
)
from taskmerge.experiment.run import MergeOutcome
from taskmerge.experiment.versions import versions
from taskmerge.io.atomic import write_json

RESULTS_FILE = "results.json"


def results_json(outcome: MergeOutcome, info: Mapping[str, Any]) -> dict[str, Any]:
    """The complete results of one job: the chosen hyperparameters, the per-task Test and Val
    tables, the Val curve, the fine-tuned (and zero-shot) references, the method's details,
    the grid-edge finding, what the sweep evaluated, versions and ``info`` (model, mode,
    config...)."""
    method, refs = outcome.method, outcome.references
    tasks = list(refs["val"].tasks)
    results: dict[str, Any] = {
        "method": method.name,
        "hyperparameters": outcome.chosen.hyperparameters,
        **dict(info),
        "tasks": tasks,
        "test": per_task_table(outcome.test.metrics),
        "val": per_task_table(outcome.val.metrics),
        "sweep": [point_record(point) for point in outcome.curve],
        "finetuned": {
            t: {"val_top1": refs["val"].finetuned[t], "test_top1": refs["test"].finetuned[t]}
            for t in tasks
        },
        "versions": versions(),
        "seconds": outcome.seconds,
        "complete": True,
        "grid_edge": outcome.grid_edge,
        "evaluations": outcome.evaluations.record() if outcome.evaluations else None,
    }
    details: dict[str, Any] = dict(method.details())
    for split, point in (("val", outcome.val), ("test", outcome.test)):
        derived = method.derived_metrics(point.metrics, refs[split])
        if derived:
            details[split] = dict(derived)
    if details:
        results["report"] = details
    if "transductive" in details:  # adapted on the unlabeled Test images: marked everywhere
        results["transductive"] = bool(details["transductive"])
    if refs["val"].zeroshot and refs["test"].zeroshot:
        results["zeroshot"] = {
            t: {"val_top1": refs["val"].zeroshot[t], "test_top1": refs["test"].zeroshot[t]}
            for t in tasks
        }
    return results


def logged_test(outcome: MergeOutcome) -> dict[str, float]:
    """The Test metrics a tracker logs (accuracies and the method's derived metrics)."""
    test = outcome.test
    return loggable(split_record(test.metrics) | derived_record("test", test.derived))


def summary_of(outcome: MergeOutcome) -> dict[str, Any]:
    """What a tracker summarises: the Test metrics, the chosen hyperparameters and the
    zero-shot references."""
    chosen = {f"chosen/{k}": v for k, v in outcome.chosen.hyperparameters.items()}
    zeroshot = zeroshot_log({s: r.zeroshot for s, r in outcome.references.items() if r.zeroshot})
    return logged_test(outcome) | chosen | zeroshot


def write_results(results: Mapping[str, Any], run_dir: str | Path) -> Path:
    """Write ``results.json`` into the run directory (atomically)."""
    path = Path(run_dir) / RESULTS_FILE
    write_json(results, path)
    return path
