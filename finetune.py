"""Fine-tune the image encoder on each task and write safetensors checkpoints.

python finetune.py                                   # the demo tasks on the tiny model
python finetune.py model=ViT-B-32 tasks=8            # the reference protocol, 8 tasks
python finetune.py model=ViT-B-32 tasks.names=[MNIST] finetuning=attention
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from taskmerge.entrypoints import build_workspace, quote_numeric_choices, set_default_home

log = logging.getLogger("taskmerge")


@hydra.main(config_path="config", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Fine-tune every configured task that has no checkpoint yet (or all, with overwrite)."""
    workspace = build_workspace(cfg)
    for task in workspace.task_names:
        exists = task not in workspace.missing_checkpoints()
        if exists and not cfg.overwrite:
            log.info(
                "%s: checkpoint exists in %s (overwrite=true replaces it)",
                task,
                workspace.checkpoint_dir(task),
            )
            continue
        metrics = workspace.finetune_task(task, overwrite=bool(cfg.overwrite))
        log.info(
            "%s: val top-1 %.2f%%, test top-1 %.2f%% -> %s",
            task,
            100 * metrics["val_top1"],
            100 * metrics["test_top1"],
            workspace.checkpoint_dir(task),
        )


if __name__ == "__main__":
    set_default_home(Path(__file__).resolve().parent)
    sys.argv = quote_numeric_choices(sys.argv)
    main()
