"""Experiment tracking: one W&B run per job (offline by default), or none."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class Tracker:
    """No-op tracker (``logger=none``); the base of the real ones."""

    def __init__(self, **_: Any) -> None:
        """Accept and ignore the arguments a real tracker takes (run dir, name, config)."""

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metrics (names with slashes, e.g. ``val/MNIST/top1``)."""

    def summary(self, values: Mapping[str, Any]) -> None:
        """Record final values."""

    def log_image(self, key: str, path: str | Path) -> None:
        """Record an image file (a plot)."""

    def finish(self) -> None:
        """Close the run (called in a ``finally`` by every job)."""


class WandbTracker(Tracker):
    """One W&B run per job; ``mode=offline`` needs no account (sync later with ``wandb sync``)."""

    def __init__(
        self,
        project: str = "taskmerge",
        mode: str = "offline",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        dir: str | None = None,  # noqa: A002 - wandb's own argument name
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        if dir:
            Path(dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            mode=mode,
            entity=entity,
            group=group,
            name=name,
            tags=list(tags),
            dir=dir,
            config=dict(run_config or {}),
            reinit="finish_previous",
        )

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # noqa: D102
        self.run.log(dict(metrics), step=step)

    def summary(self, values: Mapping[str, Any]) -> None:  # noqa: D102
        for key, value in values.items():
            self.run.summary[key] = value

    def log_image(self, key: str, path: str | Path) -> None:  # noqa: D102
        import wandb

        self.run.log({key: wandb.Image(str(path))})

    def finish(self) -> None:  # noqa: D102
        self.run.finish()
