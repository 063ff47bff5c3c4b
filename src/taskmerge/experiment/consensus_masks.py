"""Consensus from the TALL masks each task chose on its own Val, as the reference builds it.

``nik-dim/tall_masks`` ``src/utils/tallmask_utils.py`` (``construct_consensus_mask``) counts the
masks a previous ``tall_mask`` run saved, each task's at the lambda that task chose on Val.
``tall_mask_lambda=chosen`` (Consensus' default) does the same: it reads the lambdas a
``tall_mask`` run recorded beside its masks, or, when no run did, runs that per-task selection
on Val first (saying so) and records it; a fixed lambda is used only when one is given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from taskmerge.evaluate.evaluator import Evaluator
from taskmerge.experiment.selection import Selection
from taskmerge.experiment.sweep import sweep
from taskmerge.io.tensors import StateDict
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.mask_methods import Consensus, TallMask
from taskmerge.metrics import Reference
from taskmerge.vectors.task_vector import TaskVector

log = logging.getLogger("taskmerge")


def resolve_chosen_lambdas(
    method: MergeMethod,
    pretrained: StateDict,
    task_vectors: Mapping[str, TaskVector],
    evaluator: Evaluator,
    val: Reference,
) -> None:
    """Give a Consensus with ``tall_mask_lambda=chosen`` its per-task lambdas (from a recorded
    ``tall_mask`` run, or from running its per-task Val selection now); others are unchanged."""
    consensus = getattr(method, "method", method)  # LiNeS wraps the method it scales
    tasks = list(task_vectors)
    if not isinstance(consensus, Consensus) or consensus.use_chosen(tasks):
        return
    log.info(
        "consensus: no tall_mask run recorded the lambdas these tasks chose on Val (%s): "
        "running tall_mask's per-task selection on Val first",
        consensus.chosen_record(tasks) or "no mask directory",
    )
    tall = TallMask(
        use_ties=consensus.use_ties, k=consensus.k, ties_agg=consensus.ties_agg,
        save_mask=consensus.save_mask, mask_dir=consensus.mask_dir,
        trim_population=consensus.trim_population,
    ).bind(None, tasks, mask_dir=consensus._bound_mask_dir)  # fmt: skip
    tall.set_text_side(consensus.text_side_entries)
    selection = Selection(val.finetuned, per_task=True)
    for candidate, point in sweep(tall, pretrained, task_vectors, evaluator, val):
        selection.offer(candidate, point)
    chosen, _ = selection.result("tall_mask")
    tall.chosen(chosen.hyperparameters, tasks)
    lambdas = chosen.hyperparameters["tall_mask_lambda"]
    log.info("consensus: the TALL masks at the lambdas chosen per task: %s", lambdas)
    consensus.set_lambdas(lambdas)
