"""``finetune.py``: fine-tune the image encoder on every configured task that has no checkpoint
yet (all of them with ``overwrite=true``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from omegaconf import DictConfig

from taskmerge.app.workspace import Workspace

log = logging.getLogger("taskmerge")


def finetune_job(cfg: DictConfig) -> dict[str, Mapping[str, float]]:
    """Fine-tune each task; task -> its fine-tuned Val / Test top-1 (rank 0 of a distributed
    run; the other ranks return nothing)."""
    workspace = Workspace.open(cfg)
    done: dict[str, Mapping[str, float]] = {}
    for task in workspace.tasks:
        if workspace.store.path(task).is_file() and not cfg.overwrite:
            log.info("%s: checkpoint exists in %s (overwrite=true replaces it)", task,
                     workspace.store.task_dir(task))  # fmt: skip
            continue
        metrics = workspace.finetune(task, overwrite=bool(cfg.overwrite), world_size=cfg.world_size)
        if metrics is not None:
            done[task] = metrics
            log.info("%s: val top-1 %.2f%%, test top-1 %.2f%%", task, 100 * metrics["val_top1"],
                     100 * metrics["test_top1"])  # fmt: skip
    return done
