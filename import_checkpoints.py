"""Import published fine-tuned checkpoints into taskmerge's layout (never executing a pickle).

python import_checkpoints.py source=hf://nik-dim/tall_masks model=ViT-B-32
python import_checkpoints.py source=hf://tanganke model=ViT-B-32 num_tasks=8     # FusionBench
python import_checkpoints.py source=~/tall_masks_checkpoints model=ViT-L-14
python import_checkpoints.py source=mnist.safetensors task=MNIST model=ViT-B-32
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
from taskmerge.jobs import run_import

log = logging.getLogger("taskmerge")


@hydra.main(config_path="config", config_name="import", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    """Import, then print what was imported, skipped (unchanged) and where it went."""
    report, where = run_import(cfg)
    log.info("imported %s; unchanged %s", report.imported or "-", report.skipped or "-")
    if report.masks:
        log.info("published TALL masks %s -> %s", report.masks, where / "masks")
    log.info("checkpoints in %s (fine-tuned accuracies are measured on first use)", where)


if __name__ == "__main__":
    set_default_home(Path(__file__).resolve().parent)
    register_resolvers()
    check_command_line(Path(__file__).resolve().parent / "config", "import", sys.argv[1:])
    main()
