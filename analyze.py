"""Analyses of fine-tuned task vectors: the weight-disentanglement error of a task pair.

python analyze.py                                             # demo: first two demo tasks
python analyze.py finetuning=linear DATASETS=[Digits,Shapes]
python analyze.py 'analysis.modes=[standard,linear,attention,standard@linear]'
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
from taskmerge.jobs import run_analysis

log = logging.getLogger("taskmerge")


@hydra.main(config_path="config", config_name="analyze", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    """One Hydra job: the disentanglement heatmap(s), JSON and W&B run."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    results = run_analysis(cfg, run_dir)
    for item in results["results"]:
        log.info("%s: mean xi %.4f (max %.4f)", item["label"], item["mean_xi"], item["max_xi"])
    log.info("heatmaps in %s, values in %s", results["figure"], run_dir / "disentanglement.json")


if __name__ == "__main__":
    set_default_home(Path(__file__).resolve().parent)
    register_resolvers()
    check_command_line(Path(__file__).resolve().parent / "config", "analyze", sys.argv[1:])
    main()
