"""``main.py``: merge the fine-tuned encoders, choose the hyperparameters on Val, evaluate the
chosen model once on Test, and write the results."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from taskmerge.adapt.pipeline import run_data
from taskmerge.app.config import (
    checkpoints_line,
    config_dict,
    method_from_config,
    open_tracker,
    run_dir,
    setup_line,
    task_names,
)
from taskmerge.app.preflight import (
    check_destination,
    check_same_job,
    check_writable_all,
    earlier_results,
)
from taskmerge.app.workspace import Workspace
from taskmerge.errors import StorageError
from taskmerge.evaluate.references import finetuned_accuracies, zeroshot_accuracies
from taskmerge.experiment.adaptive import DEFAULT_TOLERANCE
from taskmerge.experiment.records import avg_log, sweep_log
from taskmerge.experiment.results import (
    RESULTS_FILE,
    logged_test,
    results_json,
    summary_of,
    write_results,
)
from taskmerge.experiment.run import MergeOutcome, make_references, run_merge
from taskmerge.io.atomic import write_json
from taskmerge.io.tensors import save_state_dict
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.device import on_merge_device, resolve_merge_device
from taskmerge.metrics import Reference
from taskmerge.reporting.plots import plot_coefficients, plot_run_sweep
from taskmerge.reporting.tracking import Tracker
from taskmerge.store.layout import CacheLayout
from taskmerge.store.results import ResultStore, job_key
from taskmerge.vectors.task_vector import TaskVector

log = logging.getLogger("taskmerge")


def merge_job(cfg: DictConfig) -> float:
    """One merge experiment, top to bottom; returns the mean normalized Test top-1."""
    directory = run_dir()
    earlier = earlier_results(directory / RESULTS_FILE, cfg.overwrite)
    method = method_from_config(cfg.method)
    check_destination(cfg.paths.cache, "paths.cache", cfg.paths.create, home=cfg.paths.root)
    check_destination(
        cfg.paths.checkpoints, "paths.checkpoints", cfg.paths.create, home=cfg.paths.root
    )
    log.info(plan_line(cfg, method, directory))
    workspace = Workspace.open(cfg)
    method = method.bind(workspace.encoder, workspace.tasks, mask_dir=workspace.store.mask_dir)
    method.set_text_side(workspace.model.bundle.text_side_entries)  # trim_population=checkpoint
    preflight(cfg, workspace, method, directory)
    workspace.ensure_checkpoints(cfg.finetune_missing, cfg.world_size)
    task_vectors = workspace.store.task_vectors(workspace.tasks)  # every checkpoint checked now
    config = config_dict(cfg)
    key = job_key(config, {t: workspace.store.path(t) for t in workspace.tasks}, cfg.paths.root)
    check_same_job(directory / RESULTS_FILE, earlier, key)
    finished = ResultStore(CacheLayout(Path(cfg.paths.cache)).results)
    tracker = open_tracker(cfg, directory)
    try:
        reused = None if cfg.get("force") else finished.get(key)
        if reused is not None:
            results = publish_reused(reused, key, finished.path(key), directory, tracker)
        else:
            references = measure_references(workspace, method)
            if method.needs_data:
                attach_data(method, workspace, tracker)
            outcome = run_merge(
                method, workspace.pretrained, merge_inputs(cfg, method, task_vectors),
                workspace.evaluator, references,
                on_point=lambda step, point: tracker.log(sweep_log(point), step=step),
                sweep_kind=cfg.get("sweep", "grid"),
                sweep_tolerance=cfg.get("sweep_tolerance", DEFAULT_TOLERANCE),
            )  # fmt: skip
            results = results_json(outcome, job_info(workspace, config, key))
            publish(results, outcome, directory, tracker)
            finished.put(key, results)
    finally:
        tracker.finish()
    return summarize(results, directory)


def merge_inputs(
    cfg: DictConfig, method: MergeMethod, task_vectors: Mapping[str, TaskVector]
) -> Mapping[str, TaskVector]:
    """The task vectors read onto ``merge_device`` (data-using methods keep their own
    ``method.device`` and read them on the CPU)."""
    if method.needs_data:
        return task_vectors
    return on_merge_device(task_vectors, resolve_merge_device(str(cfg.merge_device)))


def plan_line(cfg: DictConfig, method: MergeMethod, directory: Path) -> str:
    """The first line of a run: what it will do, before it does any of it."""
    points = method.grid_size()
    adaptive = "an adaptive Val sweep over" if cfg.get("sweep") == "adaptive" else "a Val sweep of"
    sweep = (
        f"{adaptive} {points} grid points, then Test once"
        if points > 1
        else "no sweep (one candidate): Val, then Test"
    )
    return (
        f"main.py: merge with {method.name}; {setup_line(cfg, task_names(cfg))}; {sweep}; "
        f"{checkpoints_line(cfg)}; results in {directory}"
    )


def preflight(cfg: DictConfig, workspace: Workspace, method: MergeMethod, directory: Path) -> None:
    """Every place the job writes is writable, before any work (the destinations were checked
    to be real places before anything was loaded): the run directory, the caches, the
    checkpoints' folder when checkpoints are fine-tuned or measured, and the method's own
    outputs (e.g. TALL-mask files)."""
    store = workspace.store
    places = [directory, cfg.paths.cache, *method.writes_to()]
    scoring = workspace.evaluator.scoring
    if any(store.metrics(t, scoring) is None for t in workspace.tasks) or (
        method.needs_data  # RegMean's / Fisher's statistics are cached beside the checkpoints
    ):
        places.append(store.layout.mode_dir)
    check_writable_all(places)


def attach_data(method: MergeMethod, workspace: Workspace, tracker: Tracker) -> None:
    """Give a method that learns from data the run's encoder, heads and splits (labels are
    never read), and log its per-step objective (AdaMerging's entropy) to the tracker."""
    checkpoints = {t: workspace.store.path(t) for t in workspace.tasks}
    method.attach(run_data(workspace.evaluator, checkpoints, method, workspace.tasks))  # type: ignore[attr-defined]
    if hasattr(method, "on_step"):
        method.on_step = lambda step, values: tracker.log(
            {f"adapt/{key}": value for key, value in values.items()}
        )


def save_coefficients(method: MergeMethod, directory: Path, tracker: Tracker) -> None:
    """The learned coefficients (if any): ``coefficients.safetensors`` (tasks x layers),
    ``coefficients.json`` and the heatmap ``coefficients.png``."""
    learned = method.learned_coefficients()
    if learned is None:
        return
    meta = {"tasks": learned["tasks"], "layers": learned["layers"]}
    header = {k: ",".join(v) for k, v in meta.items()}
    tensors = {"coefficients": learned["coefficients"]}
    save_state_dict(tensors, directory / "coefficients.safetensors", header)
    rows = learned["coefficients"].tolist()
    write_json({**meta, "coefficients": dict(zip(learned["tasks"], rows, strict=True))},
               directory / "coefficients.json")  # fmt: skip
    try:
        tracker.log_image(
            "coefficients", plot_coefficients(learned, directory / "coefficients.png")
        )
    except StorageError as exc:
        log.warning("the coefficient plot was not written: %s", exc)


def measure_references(workspace: Workspace, method: MergeMethod) -> dict[str, Reference]:
    """The fine-tuned accuracies (measured by this project, stored with the checkpoints) and
    the zero-shot ones (the methods that need them select with them; every run records them in
    ``results.json`` and draws them in ``sweep.png``; cached on disk: measured once per task,
    split and model, not once per job)."""
    finetuned = finetuned_accuracies(workspace.store, workspace.evaluator, workspace.tasks)
    zeroshot = zeroshot_accuracies(workspace.evaluator, workspace.pretrained)
    return make_references(workspace.tasks, finetuned, zeroshot)


def job_info(workspace: Workspace, config: Mapping[str, Any], key: str) -> dict[str, Any]:
    """What ``results.json`` records about the job beyond the merge itself."""
    return {
        "model": workspace.model.bundle.name,
        "pretrained": workspace.model.bundle.pretrained,
        "finetuning": workspace.mode.name,
        "eval_forward": workspace.evaluator.forward,
        "eval_precision": workspace.evaluator.precision,
        "protocol": config.get("protocol", {}).get("name", "taskmerge"),
        "subset": config.get("limit_samples"),  # N: the first N samples of each split only
        "split_variants": dict(workspace.data.variants),  # e.g. the references' DTD folder
        "config": dict(config),
        "job_key": key,
    }


def publish(
    results: Mapping[str, Any], outcome: MergeOutcome, directory: Path, tracker: Tracker
) -> None:
    """``results.json``, ``sweep.png`` and the tracker's Test metrics and summary."""
    write_results(results, directory)
    try:
        plot_run_sweep(results, directory / "sweep.png")
    except StorageError as exc:  # the results are written: the plot is not worth failing for
        log.warning("the sweep plot was not written: %s", exc)
    save_coefficients(outcome.method, directory, tracker)
    tracker.log(logged_test(outcome))
    tracker.summary(summary_of(outcome))


def publish_reused(
    reused: dict[str, Any], key: str, source: Path, directory: Path, tracker: Tracker
) -> dict[str, Any]:
    """The complete results of an identical earlier job, written as this job's (marked reused)."""
    reused["reused"] = {"key": key, "from": str(source)}
    write_results(reused, directory)
    tracker.summary({"reused": True, **avg_log(reused["test"]["avg"], "test")})
    log.info("%s: complete results of this job exist, reused (force=true redoes it)",
             reused["method"])  # fmt: skip
    return reused


def summarize(results: Mapping[str, Any], directory: Path) -> float:
    """Log the job's outcome in one line; return its mean normalized Test top-1."""
    test = results["test"]["avg"]
    log.info(
        "%s on %d tasks: test top-1 %.2f%%, normalized %.2f%% (chosen %s); results in %s",
        results["method"], len(results["tasks"]), 100 * test["top1"],
        100 * test["normalized_top1"], results["hyperparameters"], directory / "results.json",
    )  # fmt: skip
    return float(test["normalized_top1"])
