"""Reading the composed Hydra config: instantiating its pieces, the task list, the merge method,
the tracker, and the facts of the running Hydra job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from taskmerge.data.task_lists import resolve_task_names
from taskmerge.errors import ConfigError, TaskmergeError
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.build import build_method
from taskmerge.merging.registry import help_text
from taskmerge.reporting.tracking import Tracker


def linspace(start: float, stop: float, num: int, skip: int = 0) -> list[float]:
    """``np.linspace(start, stop, num)[skip:]`` as a list: the references' grids, value for value
    (``${linspace:0,3,31,1}`` in a config is TSV's ``np.linspace(0, 3, 31)[1:]``)."""
    import numpy as np

    return [float(v) for v in np.linspace(float(start), float(stop), int(num))[int(skip) :]]


def arange(start: float, stop: float, step: float) -> list[float]:
    """``np.arange(start, stop, step)`` as a list (LiNeS' ``np.arange(0.1, 1.6, 0.1)``)."""
    import numpy as np

    return [float(v) for v in np.arange(float(start), float(stop), float(step))]


def register_resolvers() -> None:
    """OmegaConf resolvers the configs use (``--help`` lists the methods of the registry;
    ``linspace`` writes the references' grids)."""
    OmegaConf.register_new_resolver("taskmerge_methods", help_text, replace=True)
    OmegaConf.register_new_resolver("linspace", linspace, replace=True)
    OmegaConf.register_new_resolver("arange", arange, replace=True)


def set_default_home(project_root: Path) -> None:
    """Caches and checkpoints default to ``<repo>/cache`` (git-ignored) unless set elsewhere."""
    os.environ.setdefault("TASKMERGE_HOME", str(project_root / "cache"))


def instantiate(node: DictConfig, **kwargs: object) -> Any:
    """``hydra.utils.instantiate`` that lets the library's own one-line errors through unwrapped."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, TaskmergeError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def config_dict(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (for results and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def resolved(cfg: DictConfig) -> dict:
    """:func:`config_dict`, with an interpolation that cannot be resolved as one line.

    Raises:
        ConfigError: naming the key and the interpolation's problem.
    """
    try:
        return config_dict(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "a key"
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{key}: {message}: fix the value or its ${{...}} reference") from None


def method_from_config(node: DictConfig) -> MergeMethod:
    """``cfg.method`` built through the registry (its ``name`` and keys)."""
    keys = OmegaConf.to_container(node, resolve=True)
    assert isinstance(keys, dict)
    name = keys.pop("name")
    return build_method(str(name), keys)


def task_names(cfg: DictConfig) -> list[str]:
    """The run's tasks from ``tasks.names`` / ``DATASETS``, else the first ``num_tasks``."""
    return resolve_task_names(cfg.tasks.names, cfg.tasks.list, cfg.num_tasks)


def setup_line(cfg: DictConfig, names: list[str]) -> str:
    """The model, fine-tuning mode and tasks of a job, in words (for its first log line)."""
    choices = hydra_choices()
    model = choices.get("model") or str(cfg.model.get("name", cfg.model.get("_target_", "?")))
    mode = choices.get("finetuning") or "standard"
    shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
    plural = "s" * (len(names) != 1)
    return f"model {model}, fine-tuning {mode}, {len(names)} task{plural} ({shown})"


def checkpoints_line(cfg: DictConfig) -> str:
    """Where a job's fine-tuned checkpoints come from, and whether missing ones are trained."""
    if cfg.get("finetune_missing"):
        return f"missing checkpoints are fine-tuned first into {cfg.paths.checkpoints}"
    return f"checkpoints from {cfg.paths.checkpoints} (finetune_missing=true trains missing ones)"


def hydra_choices() -> dict[str, str]:
    """The config-group choices of the running Hydra job ({} outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}


def finetune_command() -> str:
    """The finetune.py command line that matches this job's model and fine-tuning choices."""
    choices = hydra_choices()
    if "model" in choices and "finetuning" in choices:
        return f"python finetune.py model={choices['model']} finetuning={choices['finetuning']}"
    return "python finetune.py"


def sweep_group() -> str | None:
    """The name of the multirun this job belongs to (its sweep directory), or None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return Path(hydra_cfg.sweep.dir).name
    except ValueError:  # not inside a Hydra job
        pass
    return None


def run_dir() -> Path:
    """The running Hydra job's output directory."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def open_tracker(cfg: DictConfig, directory: Path) -> Tracker:
    """The job's tracker; the jobs of one multirun share a W&B group (its sweep directory)
    unless ``logger.group`` is set."""
    extra: dict[str, Any] = {}
    group = sweep_group()
    if group and "group" in cfg.logger and cfg.logger.group is None:
        extra["group"] = group
    return instantiate(  # not recursive: the run config's _target_ nodes stay data
        cfg.logger,
        dir=str(directory),
        name=directory.name,
        run_config=config_dict(cfg),
        _recursive_=False,
        _convert_="all",
        **extra,
    )
