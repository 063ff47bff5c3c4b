"""The one opening of the root scripts: ``run(__file__, "config", merge_job)``.

Sets the default home (``<repo>/cache``), registers the config resolvers, reads the reference
repos' flags (``--model=ViT-B-32``, :mod:`taskmerge.app.reference_flags`) as the Hydra overrides
they mean, checks the command line before Hydra starts (one line, exit 2, for an unknown
option, a wrongly typed value or an unwritable output directory), then runs the job as a Hydra
app whose config is checked again (:func:`taskmerge.app.schema.check_config`) and whose user
errors are one line too, leaving no empty run folder behind (:mod:`taskmerge.app.run_folder`);
other libraries' INFO lines are hidden unless ``verbose=true``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from taskmerge.app.command_line import check_command_line
from taskmerge.app.config import register_resolvers, resolved, set_default_home
from taskmerge.app.errors import user_errors
from taskmerge.app.reference_flags import translate
from taskmerge.app.run_folder import RunFolder, quiet_libraries
from taskmerge.app.schema import check_config
from taskmerge.errors import TaskmergeError


def run(script: str, config_name: str, job: Callable[[DictConfig], Any]) -> None:
    """Run ``job`` as the Hydra app of the root script ``script`` (its ``config/`` folder holds
    ``<config_name>.yaml``)."""
    root = Path(script).resolve().parent
    set_default_home(root)
    register_resolvers()
    config_dir = root / "config"
    sys.argv[1:] = translate(config_name, sys.argv[1:])  # the reference repos' --flags
    check_command_line(config_dir, config_name, sys.argv[1:])

    @functools.wraps(job)
    @user_errors
    def task(cfg: DictConfig) -> Any:
        quiet_libraries(bool(cfg.get("verbose", False)))
        folder = _run_folder()
        try:
            check_config(resolved(cfg), config_name)  # before anything is loaded
            return job(cfg)
        except TaskmergeError:
            if folder is not None:
                folder.discard()  # a user error leaves no empty run folder behind
            raise

    hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")(task)()


def _run_folder() -> RunFolder | None:
    """The running job's folder (None outside a Hydra job)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    return RunFolder(Path(hydra_cfg.runtime.output_dir), f"{hydra_cfg.job.name}.log")
