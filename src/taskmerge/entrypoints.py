"""Hydra glue shared by main.py and finetune.py: config -> library objects.

The rest of the library knows nothing of Hydra; this module instantiates the configured pieces
and validates them before any long work starts.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from taskmerge.data.catalog import resolve_task_specs
from taskmerge.data.registry import resolve_task_names
from taskmerge.errors import TaskmergeError
from taskmerge.merging import MergeMethod, with_lines
from taskmerge.merging.lines import LINES_KEYS
from taskmerge.workspace import Settings, Workspace

log = logging.getLogger("taskmerge")

#: Config groups whose option names are numbers (Hydra would parse ``tasks=14`` as an int).
NUMERIC_GROUPS = ("tasks",)


def quote_numeric_choices(argv: Sequence[str]) -> list[str]:
    """Rewrite ``tasks=14`` / ``tasks=8,14`` as quoted strings so Hydra selects the config file."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("~+") in NUMERIC_GROUPS and re.fullmatch(r"\d+(,\d+)*", value):
            arg = f"{key}=" + ",".join(f"'{v}'" for v in value.split(","))
        out.append(arg)
    return out


def instantiate(node: DictConfig, **kwargs: object) -> object:
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


def build_method(node: DictConfig) -> MergeMethod:
    """Instantiate ``cfg.method``; its LiNeS keys (``apply_lines``, ``tradeoff_target_weight``)
    wrap the method (:func:`taskmerge.merging.with_lines`) instead of reaching its class."""
    keys = OmegaConf.to_container(node, resolve=True)
    options = {key: keys.pop(key) for key in LINES_KEYS if key in keys}
    return with_lines(instantiate(OmegaConf.create(keys)), **options)


def set_default_home(project_root: Path) -> None:
    """Caches and checkpoints default to ``<repo>/cache`` (git-ignored) unless set elsewhere."""
    os.environ.setdefault("TASKMERGE_HOME", str(project_root / "cache"))


def build_workspace(cfg: DictConfig) -> Workspace:
    """Resolve tasks, load the model and build the workspace (fails fast on bad input)."""
    names = resolve_task_names(cfg.tasks.names, cfg.tasks.count)
    specs = resolve_task_specs(names)
    settings = Settings(
        checkpoints=Path(cfg.paths.checkpoints),
        data_root=Path(cfg.paths.data),
        cache_dir=Path(cfg.paths.cache),
        finetuning=instantiate(cfg.finetuning),
        train=instantiate(cfg.train),
        device=cfg.device,
        eval_batch_size=cfg.eval_batch_size,
        num_workers=cfg.num_workers,
        finetune_missing=cfg.finetune_missing,
        finetune_command=finetune_command(),
    )
    bundle = instantiate(cfg.model)
    return Workspace(bundle, specs, settings)


def finetune_command() -> str:
    """The finetune.py command line that matches this job's model and fine-tuning choices."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
        return f"python finetune.py model={choices['model']} finetuning={choices['finetuning']}"
    except (ValueError, KeyError):
        return "python finetune.py"


def config_dict(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (for results and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
