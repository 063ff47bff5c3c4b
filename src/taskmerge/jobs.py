"""The jobs of the entry points: main.py (merge), finetune.py, analyze.py, prepare_data.py and
import_checkpoints.py, each from its composed config (see :mod:`taskmerge.entrypoints` for the
shared Hydra glue)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from taskmerge.checkpoints import check_writable, fingerprint, write_json
from taskmerge.data.catalog import resolve_task_specs
from taskmerge.disentanglement import coefficient_grid, disentanglement_error, plot_heatmaps
from taskmerge.entrypoints import (
    build_method,
    build_setup,
    config_dict,
    ensure_checkpoints,
    finetune_command,
    finetune_in_setup,
    instantiate,
    open_tracker,
    task_names,
)
from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.experiment import run_merge
from taskmerge.finetuning import FinetuningMode, check_forward
from taskmerge.resume import ResultStore, job_key
from taskmerge.store import CheckpointStore
from taskmerge.tracking import write_results
from taskmerge.training import finetuned_accuracies

log = logging.getLogger("taskmerge")


def run_main(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """main.py's job: build everything, check it, fine-tune what is missing (demo), merge."""
    check_writable(run_dir)
    method = build_method(cfg.method)
    setup = build_setup(cfg)
    method = method.bind(setup.bundle.visual, setup.tasks, mask_dir=setup.store.mask_dir)
    if not cfg.finetune_missing:
        setup.store.require(setup.tasks, finetune_command())
    tracker = open_tracker(cfg, run_dir)
    try:
        ensure_checkpoints(setup, cfg.finetune_missing, cfg.world_size)
        task_vectors = setup.store.task_vectors(setup.tasks)  # every checkpoint checked now
        config = config_dict(cfg)
        key = job_key(config, {t: setup.store.path(t) for t in setup.tasks})
        results_store = ResultStore(Path(cfg.paths.cache).expanduser() / "results")
        reused = None if cfg.get("force") else results_store.get(key)
        if reused is not None:
            reused["reused"] = {"key": key, "from": str(results_store.path(key))}
            write_results(reused, run_dir)
            tracker.summary({"reused": True, **{f"test/avg/{k}": v for k, v in
                                                reused["test"]["avg"].items()}})  # fmt: skip
            log.info("%s: complete results of this job exist, reused (force=true redoes it)",
                     reused["method"])  # fmt: skip
            return reused
        finetuned = finetuned_accuracies(setup.store, setup.evaluator, setup.tasks)
        info = {
            "model": setup.bundle.name,
            "pretrained": setup.bundle.pretrained,
            "finetuning": setup.mode.name,
            "eval_forward": setup.evaluator.forward,
            "eval_precision": setup.evaluator.precision,
            "config": config,
            "job_key": key,
        }
        results = run_merge(
            method,
            setup.pretrained,
            task_vectors,
            setup.evaluator,
            finetuned,
            tracker,
            run_dir,
            info,
        )
        results_store.put(key, results)
        return results
    finally:
        tracker.finish()


def run_finetune(cfg: DictConfig) -> dict[str, Mapping[str, float]]:
    """finetune.py's job: fine-tune every task without a checkpoint (all, with overwrite)."""
    setup = build_setup(cfg)
    done: dict[str, Mapping[str, float]] = {}
    for task in setup.tasks:
        if setup.store.path(task).is_file() and not cfg.overwrite:
            log.info(
                "%s: checkpoint exists in %s (overwrite=true replaces it)",
                task,
                setup.store.task_dir(task),
            )
            continue
        done[task] = finetune_in_setup(
            setup, task, overwrite=bool(cfg.overwrite), world_size=cfg.world_size
        )
    return done


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


def run_analysis(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """analyze.py's job: the disentanglement error of the first two tasks, per mode; the
    heatmaps (one figure), ``disentanglement.json`` and the tracker."""
    names = task_names(cfg)
    if len(names) < 2:
        raise ConfigError(f"the disentanglement error needs two tasks, got {names}: set DATASETS")
    pair = names[:2]
    analysis = cfg.analysis
    grid = coefficient_grid(analysis.grid_min, analysis.grid_max, analysis.grid_points)
    modes = analysis_modes(cfg)
    tracker = open_tracker(cfg, run_dir)
    try:
        results = []
        for node, forward in modes:
            setup = build_setup(cfg, node, forward, pair)
            if not cfg.finetune_missing:
                setup.store.require(pair, finetune_command())
            ensure_checkpoints(setup, cfg.finetune_missing, cfg.world_size)
            vectors = [dict(setup.store.task_vector(task).vector) for task in pair]
            result = disentanglement_error(
                setup.evaluator, setup.pretrained, vectors, pair, grid, analysis.split
            )
            cast = setup.evaluator.forward != setup.mode.forward
            result.label = setup.mode.name + (
                f" ({setup.evaluator.forward} forward)" if cast else ""
            )
            result.info = {"finetuning": setup.mode.name, "eval_forward": setup.evaluator.forward}
            results.append(result)
            key = result.label.replace(" ", "_")
            tracker.log({f"disentanglement/{key}/mean_xi": float(result.xi.mean())})
        figure = plot_heatmaps(results, run_dir / "disentanglement.png")
        tracker.log_image("disentanglement/heatmaps", figure)
        summary = {
            "analysis": "disentanglement",
            "tasks": pair,
            "split": analysis.split,
            "results": [r.to_json() for r in results],
            "figure": str(figure),
            "config": config_dict(cfg),
            "complete": True,
        }
        write_json(summary, run_dir / "disentanglement.json")
        return summary
    finally:
        tracker.finish()


def run_prepare_data(cfg: DictConfig) -> tuple[list, list[str]]:
    """prepare_data.py's job: the status of each task, after preparing the missing ones."""
    from taskmerge.data.prepare import prepare, task_status

    names = task_names(cfg)
    resolve_task_specs(names)
    if cfg.action == "status":
        return [task_status(task, cfg.paths.data) for task in names], []
    if cfg.action != "prepare":
        raise ConfigError(f"action={cfg.action!r}: use action=prepare or action=status")
    return prepare(names, cfg.paths.data)


def run_import(cfg: DictConfig) -> tuple[Any, Path]:
    """import_checkpoints.py's job: fetch (``hf://``) or read the source and import it."""
    from taskmerge.finetuning import Linearized
    from taskmerge.hub import fetch, parse_hub_source
    from taskmerge.importing import Discovery, Source, import_checkpoints

    explicit = [cfg.task] if cfg.task else (list(cfg.DATASETS) if cfg.DATASETS else None)
    if explicit:
        resolve_task_specs(explicit)
    source = str(cfg.source)
    hub = parse_hub_source(source)
    if hub is None and not Path(source).expanduser().exists():
        raise CheckpointError(f"source={source} does not exist: give a folder, a file or hf://...")
    bundle = instantiate(cfg.model)
    pretrained = {k: v.detach().clone() for k, v in bundle.visual.state_dict().items()}
    pretrained_fp = fingerprint(pretrained)

    def store(mode: FinetuningMode) -> CheckpointStore:
        return CheckpointStore(
            cfg.paths.checkpoints, bundle.name, bundle.pretrained, mode, pretrained, pretrained_fp
        )

    if hub is not None:
        fusion = "/" not in hub
        root = fetch(source, bundle.name, (explicit or task_names(cfg)) if fusion else [])
    else:
        root = Path(source).expanduser()
    standard = store(FinetuningMode())
    if cfg.task:  # one plain state-dict file
        from taskmerge.importing import _import_one

        if not root.is_file():
            raise CheckpointError(f"source={root} is not a file: task= imports one state dict")
        _import_one(Source(cfg.task, root, "open_clip"), standard, Discovery("open_clip", []))
        return _single_report(cfg.task), standard.root / bundle.name / standard.finetuning
    report = import_checkpoints(
        root, bundle.name, standard, store(Linearized()), explicit, cfg.layout
    )
    return report, standard.root / bundle.name / standard.finetuning


def _single_report(task: str) -> Any:
    from taskmerge.importing import ImportReport

    return ImportReport(imported=[task])
