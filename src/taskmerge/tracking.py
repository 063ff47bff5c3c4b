"""Experiment tracking: W&B runs (offline by default), the results JSON and plots."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmerge.checkpoints import write_json


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


def write_results(results: Mapping[str, Any], run_dir: str | Path) -> Path:
    """Write ``results.json`` into the run directory (atomically)."""
    path = Path(run_dir) / "results.json"
    write_json(results, path)
    return path


def plot_sweep(
    curve: Sequence[Mapping[str, Any]], key: str, path: str | Path, title: str
) -> Path | None:
    """Plot mean normalized Val accuracy against a swept hyperparameter."""
    points = [
        (c["hyperparameters"][key], c["val/avg/normalized_top1"])
        for c in curve
        if key in c["hyperparameters"]
    ]
    if len(points) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(*zip(*points, strict=True), marker="o")
    ax.set_xlabel(key)
    ax.set_ylabel("Val mean normalized top-1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
