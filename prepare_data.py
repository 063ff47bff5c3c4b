"""Prepare the real datasets into the layouts the loaders read, or show their status.

python prepare_data.py action=status                 # per task: ready / missing / wrong size
python prepare_data.py num_tasks=20                  # download what is missing (needs network)
python prepare_data.py DATASETS=[Cars,SUN397] paths.data=/data
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
from taskmerge.jobs import run_prepare_data

log = logging.getLogger("taskmerge")


@hydra.main(config_path="config", config_name="prepare_data", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    """Print each task's status (after preparing it, unless ``action=status``)."""
    statuses, errors = run_prepare_data(cfg)
    for status in statuses:
        print(status.line())
    for error in errors:
        print(error, file=sys.stderr)
    if errors or any(s.state != "ready" for s in statuses):
        raise SystemExit(1)


if __name__ == "__main__":
    set_default_home(Path(__file__).resolve().parent)
    register_resolvers()
    check_command_line(Path(__file__).resolve().parent / "config", "prepare_data", sys.argv[1:])
    main()
