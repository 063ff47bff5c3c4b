"""The reference accuracies a merge is measured against, per task and split: the fine-tuned
encoders' (what normalized accuracy divides by) and the zero-shot encoder's."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from tqdm import tqdm

from taskmerge.evaluate.evaluator import Evaluator, TaskEvaluator
from taskmerge.store.checkpoints import CheckpointStore

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


def measure_finetuned(
    store: CheckpointStore,
    evaluator: TaskEvaluator,
    task: str,
    state: Mapping[str, torch.Tensor],
    extra: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Measure one fine-tuned encoder's Val and Test top-1 through the evaluator's forward and
    store them with its checkpoint (``extra``, e.g. training statistics, kept beside them)."""
    metrics = {f"{split}_top1": evaluator.accuracy(state, task, split) for split in SPLITS}
    store.write_metrics(task, metrics, evaluator.scoring, extra=extra)
    return metrics


def finetuned_accuracies(
    store: CheckpointStore, evaluator: TaskEvaluator, tasks: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Task -> fine-tuned ``val_top1`` / ``test_top1`` through the evaluator's forward, measured
    by this project on the same splits: read from the store, or measured now (copied
    checkpoints, a new ``eval_forward``) and stored."""
    accuracies = {}
    unmeasured = [task for task in tasks if store.metrics(task, evaluator.scoring) is None]
    for task in unmeasured:  # every one readable and finite before any is measured
        store.load(task)
    bar = tqdm(
        total=len(unmeasured),
        desc="fine-tuned accuracies (Val and Test), task",
        unit="task",
        leave=False,
        disable=not unmeasured,
    )
    for task in tasks:
        metrics = store.metrics(task, evaluator.scoring)
        if metrics is None:
            metrics = measure_finetuned(store, evaluator, task, store.load(task))
            bar.update()
        accuracies[task] = {"val_top1": metrics["val_top1"], "test_top1": metrics["test_top1"]}
    bar.close()
    return accuracies


def zeroshot_accuracies(
    evaluator: Evaluator, pretrained: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Split (``val``, ``test``) -> task -> top-1 of the pretrained encoder (cached on disk when
    the evaluator can: computed once, not once per job)."""
    cached = getattr(evaluator, "cached_accuracy", None)

    def top1(task: str, split: str) -> float:
        if cached is not None:
            return cached("zeroshot", pretrained, task, split)
        return evaluator.accuracy(pretrained, task, split)

    pairs = [(split, task) for split in SPLITS for task in evaluator.task_names]
    out: dict[str, dict[str, float]] = {split: {} for split in SPLITS}
    for split, task in tqdm(pairs, desc="zero-shot accuracies, task x split", leave=False):
        out[split][task] = top1(task, split)
    return out
