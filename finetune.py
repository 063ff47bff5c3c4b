"""Fine-tune the image encoder on each task and write safetensors checkpoints.

python finetune.py                                    # the demo tasks on the tiny model
python finetune.py model=ViT-B-32 num_tasks=8         # the reference protocol, 8 tasks
python finetune.py model=ViT-B-32 DATASETS=[MNIST] finetuning=attention
python finetune.py finetuning=linear world_size=2        # 2 processes (DDP), same result
torchrun --nproc_per_node=2 finetune.py ...               # or under torchrun
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from taskmerge.entrypoints import (
    check_command_line,
    register_resolvers,
    set_default_home,
    user_errors,
)
from taskmerge.jobs import run_finetune

log = logging.getLogger("taskmerge")


@hydra.main(config_path="config", config_name="finetune", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    """Fine-tune every configured task that has no checkpoint yet (or all, with overwrite)."""
    for task, metrics in run_finetune(cfg).items():
        if not metrics:  # another rank of a distributed run: rank 0 reports
            continue
        log.info(
            "%s: val top-1 %.2f%%, test top-1 %.2f%%",
            task,
            100 * metrics["val_top1"],
            100 * metrics["test_top1"],
        )


if __name__ == "__main__":
    set_default_home(Path(__file__).resolve().parent)
    register_resolvers()
    check_command_line(Path(__file__).resolve().parent / "config", "finetune", sys.argv[1:])
    main()
