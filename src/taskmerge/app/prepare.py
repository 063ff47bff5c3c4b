"""``prepare_data.py``: prepare the real datasets into the layouts the loaders read, or show
their status."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from taskmerge.app.config import task_names
from taskmerge.data.prepare import TaskStatus, prepare, task_status
from taskmerge.data.task_lists import resolve_task_specs
from taskmerge.errors import ConfigError

ACTIONS = ("prepare", "status")


def prepare_job(cfg: DictConfig) -> list[TaskStatus]:
    """Print each task's status (after preparing it, unless ``action=status``); exit 1 when a
    task is not ready."""
    names = task_names(cfg)
    resolve_task_specs(names)
    if cfg.action not in ACTIONS:
        raise ConfigError(f"action={cfg.action!r}: use action=prepare or action=status")
    if cfg.action == "status":
        statuses, errors = [task_status(task, cfg.paths.data) for task in names], []
    else:
        statuses, errors = prepare(names, cfg.paths.data)
    for status in statuses:
        print(status.line())
    for error in errors:
        print(error, file=sys.stderr)
    if errors or any(s.state != "ready" for s in statuses):
        raise SystemExit(1)
    return statuses
