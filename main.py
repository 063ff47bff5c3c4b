"""Merge fine-tuned encoders, choose hyperparameters on Val, evaluate on Test.

python main.py                                  # the offline demo (tiny model, demo tasks)
python main.py model=ViT-B-32 method=sum        # the 8-task paper setting
python main.py -m method=sum,average            # a Hydra multirun, one W&B run per job
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from taskmerge.entrypoints import (
    build_method,
    build_workspace,
    config_dict,
    instantiate,
    quote_numeric_choices,
    set_default_home,
)
from taskmerge.experiment import run_merge

log = logging.getLogger("taskmerge")


@hydra.main(config_path="config", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """One Hydra job: one merge experiment and one tracker run."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    method = build_method(cfg.method)
    workspace = build_workspace(cfg)
    workspace.check_checkpoints()
    tracker = instantiate(  # not recursive: the run config's own _target_ nodes stay data
        cfg.logger,
        dir=str(run_dir),
        name=run_dir.name,
        run_config=config_dict(cfg),
        _recursive_=False,
        _convert_="all",
    )
    try:
        results = run_merge(workspace, method, tracker, run_dir, config_dict(cfg))
    finally:
        tracker.finish()
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
    sys.argv = quote_numeric_choices(sys.argv)
    main()
