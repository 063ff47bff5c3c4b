"""The merge experiment in-process, as ``main.py`` runs it after the setup: references, the Val
sweep, selection, Test, and ``results.json``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskmerge.evaluate.references import zeroshot_accuracies
from taskmerge.experiment.results import results_json, write_results
from taskmerge.experiment.run import make_references, run_merge
from taskmerge.merging.base import MergeMethod
from taskmerge.vectors.task_vector import TaskVector


def merge_results(
    method: MergeMethod,
    pretrained: Mapping[str, Any],
    task_vectors: Mapping[str, TaskVector],
    evaluator: Any,
    finetuned: Mapping[str, Mapping[str, float]],
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """``results.json`` of one merge (also written into ``run_dir`` when given)."""
    zeroshot = zeroshot_accuracies(evaluator, pretrained) if method.needs_zeroshot else None
    references = make_references(list(task_vectors), finetuned, zeroshot)
    outcome = run_merge(method, pretrained, task_vectors, evaluator, references)
    results = results_json(outcome, {})
    if run_dir is not None:
        write_results(results, run_dir)
    return results
