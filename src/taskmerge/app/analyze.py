"""``analyze.py``: analyses of fine-tuned task vectors, the weight-disentanglement error of a
task pair (one heatmap per fine-tuning mode / forward)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from taskmerge.analysis.disentanglement import (
    coefficient_grid,
    disentanglement_error,
    evaluation_count,
)
from taskmerge.app.config import (
    checkpoints_line,
    config_dict,
    open_tracker,
    run_dir,
    setup_line,
    task_names,
)
from taskmerge.app.preflight import check_destination
from taskmerge.app.workspace import Workspace
from taskmerge.errors import ConfigError, StorageError
from taskmerge.io.atomic import check_writable, write_json
from taskmerge.models.forward import check_forward
from taskmerge.reporting.plots import plot_heatmaps

log = logging.getLogger("taskmerge")
#: The reference grid (arXiv:2305.12827): 15 x 15 over [-2, 2].
REFERENCE_GRID_POINTS = 15


def analysis_modes(cfg: DictConfig) -> list[tuple[DictConfig | None, str | None]]:
    """``analysis.modes`` as (finetuning config, forward) pairs; ``[(None, None)]`` (the
    configured mode and ``eval_forward``) when unset. ``name@forward`` casts."""
    entries = cfg.analysis.get("modes")
    if not entries:
        return [(None, None)]
    from hydra import compose

    pairs = []
    for entry in entries:
        name, _, forward = str(entry).partition("@")
        try:
            node = compose(config_name="analyze", overrides=[f"finetuning={name}"]).finetuning
        except Exception as exc:  # noqa: BLE001 - Hydra's own message names the options
            first = str(exc).splitlines()[0]
            raise ConfigError(
                f"analysis.modes: {entry!r} is not a finetuning option ({first})"
            ) from None
        pairs.append((node, check_forward(forward) if forward else None))
    return pairs


def plan_line(
    cfg: DictConfig, pair: list[str], grid: list[float], modes: int, directory: Path
) -> str:
    """The first line of an analysis: what it computes, on what, and where it writes."""
    size = len(grid)
    shown = "the configured mode" if modes == 1 else f"{modes} modes"
    return (
        f"analyze.py: disentanglement error of {pair[0]}/{pair[1]} on a {size} x {size} grid "
        f"over [{grid[0]:g}, {grid[-1]:g}] ({cfg.analysis.split} split), {shown}; "
        f"{setup_line(cfg, pair)}; {checkpoints_line(cfg)}; results in {directory}"
    )


def cost_line(workspace: Workspace, grid_points: int, split: str) -> str:
    """What one mode's analysis costs, said before it starts (the bar then shows the time)."""
    evaluator = workspace.evaluator
    images = sum(len(getattr(workspace.data.splits(t), split)) for t in workspace.tasks)  # type: ignore[arg-type]
    label = f"{workspace.mode.name} ({evaluator.forward} forward)"
    if getattr(evaluator, "supports_affine", False):
        work = "one primal pass and two JVPs per image (every grid point at once)"
    else:
        work = f"{evaluation_count(grid_points)} evaluations of a {split} split"
    full = ""
    if grid_points < REFERENCE_GRID_POINTS and not getattr(evaluator, "supports_affine", False):
        ratio = evaluation_count(REFERENCE_GRID_POINTS) / evaluation_count(grid_points)
        full = (f"; the reference grid (analysis.grid_points={REFERENCE_GRID_POINTS}) costs "
                f"{ratio:.0f}x this")  # fmt: skip
    return f"{label}: {work}, {images} {split} images in all{full}"


def analyze_job(cfg: DictConfig) -> dict[str, Any]:
    """The disentanglement error of the first two tasks, per mode; the heatmaps (one figure),
    ``disentanglement.json`` and the tracker."""
    directory = run_dir()
    if (directory / "disentanglement.json").exists() and not cfg.overwrite:
        raise ConfigError(
            f"{directory / 'disentanglement.json'} exists: choose another hydra.run.dir, or pass "
            "overwrite=true to replace it"
        )
    check_writable(directory)
    names = task_names(cfg)
    if len(names) < 2:
        raise ConfigError(f"the disentanglement error needs two tasks, got {names}: set DATASETS")
    pair = names[:2]
    analysis = cfg.analysis
    grid = coefficient_grid(analysis.grid_min, analysis.grid_max, analysis.grid_points)
    modes = analysis_modes(cfg)
    check_destination(cfg.paths.cache, "paths.cache", cfg.paths.create, home=cfg.paths.root)
    if cfg.finetune_missing:
        check_destination(
            cfg.paths.checkpoints, "paths.checkpoints", cfg.paths.create, home=cfg.paths.root
        )
    log.info(plan_line(cfg, pair, grid, len(modes), directory))
    tracker = open_tracker(cfg, directory)
    try:
        results = []
        for node, forward in modes:
            workspace = Workspace.open(cfg, node, forward, pair)
            workspace.ensure_checkpoints(cfg.finetune_missing, cfg.world_size)
            vectors = [dict(workspace.store.task_vector(task).vector) for task in pair]
            evaluator, mode = workspace.evaluator, workspace.mode
            log.info(cost_line(workspace, len(grid), analysis.split))
            result = disentanglement_error(
                evaluator, workspace.pretrained, vectors, pair, grid, analysis.split
            )
            cast = evaluator.forward != mode.forward
            result.label = mode.name + (f" ({evaluator.forward} forward)" if cast else "")
            result.info = {"finetuning": mode.name, "eval_forward": evaluator.forward}
            results.append(result)
            key = result.label.replace(" ", "_")
            tracker.log({f"disentanglement/{key}/mean_xi": float(result.xi.mean())})
        figure = directory / "disentanglement.png"
        summary = {
            "analysis": "disentanglement",
            "tasks": pair,
            "split": analysis.split,
            "results": [r.to_json() for r in results],
            "figure": str(figure),
            "config": config_dict(cfg),
            "complete": True,
        }
        write_json(summary, directory / "disentanglement.json")
        try:
            drawn = plot_heatmaps(results, figure, analysis.split)
            tracker.log_image("disentanglement/heatmaps", drawn)
        except StorageError as exc:  # the values are written: the plot is not worth failing for
            log.warning("the heatmaps were not written: %s", exc)
    finally:
        tracker.finish()
    for item in summary["results"]:
        log.info("%s: mean xi %.4f (max %.4f)", item["label"], item["mean_xi"], item["max_xi"])
    log.info("heatmaps in %s, values in %s", figure, directory / "disentanglement.json")
    return summary
