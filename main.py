"""Merge fine-tuned encoders, choose hyperparameters on Val, evaluate on Test.

python main.py                                          # the offline demo (tiny model, demo tasks)
python main.py model=ViT-B-32 num_tasks=8 method=sum    # the 8-task paper setting
python main.py -m method=sum,ties,TSVM                  # a Hydra multirun, one W&B run per job
python main.py --help                                   # the methods, config groups and keys
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from taskmerge.entrypoints import (
    check_command_line,
    register_resolvers,
    set_default_home,
    user_errors,
)
from taskmerge.jobs import run_main

log = logging.getLogger("taskmerge")


@hydra.main(config_path="config", config_name="config", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float:
    """One Hydra job: one merge experiment and one tracker run."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    results = run_main(cfg, run_dir)
    test = results["test"]["avg"]
    log.info(
        "%s on %d tasks: test top-1 %.2f%%, normalized %.2f%% (chosen %s); results in %s",
        results["method"],
        len(results["tasks"]),
        100 * test["top1"],
        100 * test["normalized_top1"],
        results["hyperparameters"],
        run_dir / "results.json",
    )
    return float(test["normalized_top1"])


if __name__ == "__main__":
    set_default_home(Path(__file__).resolve().parent)
    register_resolvers()
    check_command_line(Path(__file__).resolve().parent / "config", "config", sys.argv[1:])
    main()
