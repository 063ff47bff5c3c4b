"""``finetune.py``: fine-tune the image encoder on every configured task that has no checkpoint
yet (all of them with ``overwrite=true``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext

from omegaconf import DictConfig

from taskmerge.app.config import setup_line, task_names
from taskmerge.app.preflight import check_destination, check_writable_all
from taskmerge.app.workspace import Workspace
from taskmerge.finetune.distributed import launched_by_torchrun
from taskmerge.store.locks import task_lock

log = logging.getLogger("taskmerge")


def finetune_job(cfg: DictConfig) -> dict[str, Mapping[str, float]]:
    """Fine-tune each task; task -> its fine-tuned Val / Test top-1 (rank 0 of a distributed
    run; the other ranks return nothing).

    Before any training: the checkpoints' destination is a real place and writable, every task's
    data is there, and no other run is fine-tuning a task of this run (each task is fine-tuned
    under its lock, as ``main.py`` does).
    """
    names = task_names(cfg)
    kept = "replaced (overwrite=true)" if cfg.overwrite else "kept (overwrite=true replaces them)"
    log.info("finetune.py: fine-tune %s; checkpoints into %s, existing ones %s",
             setup_line(cfg, names), cfg.paths.checkpoints, kept)  # fmt: skip
    # a mistyped destination holds no checkpoint: refused before anything is loaded
    check_destination(
        cfg.paths.checkpoints, "paths.checkpoints", cfg.paths.create, home=cfg.paths.root
    )
    workspace = Workspace.open(cfg)
    store = workspace.store
    todo = [t for t in workspace.tasks if cfg.overwrite or not store.path(t).is_file()]
    for task in workspace.tasks:
        if task not in todo:
            log.info("%s: checkpoint exists in %s (overwrite=true replaces it)", task,
                     store.task_dir(task))  # fmt: skip
    if todo:
        check_writable_all([store.layout.mode_dir, cfg.paths.cache])
        for task in todo:
            workspace.data.splits(task)  # every task's data (and its size) before any training
        workspace.announce_finetuning(todo)
    done: dict[str, Mapping[str, float]] = {}
    for index, task in enumerate(todo, 1):
        torchrun = launched_by_torchrun()
        with nullcontext() if torchrun else task_lock(store.task_dir(task), wait=False):
            if store.path(task).is_file() and not cfg.overwrite:
                log.info("%s: fine-tuned meanwhile by another run, kept", task)
                continue
            metrics = workspace.finetune(task, overwrite=bool(cfg.overwrite),
                                         world_size=cfg.world_size,
                                         position=(index, len(todo)))  # fmt: skip
        if metrics is not None:
            done[task] = metrics
            log.info("%s: val top-1 %.2f%%, test top-1 %.2f%%", task, 100 * metrics["val_top1"],
                     100 * metrics["test_top1"])  # fmt: skip
    return done
