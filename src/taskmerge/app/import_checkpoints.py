"""``import_checkpoints.py``: import published fine-tuned checkpoints (a folder, a file, or a
Hugging Face repository) into taskmerge's layout, never executing a pickle."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from taskmerge.app.config import task_names
from taskmerge.app.workspace import load_pretrained
from taskmerge.data.task_lists import resolve_task_specs
from taskmerge.errors import CheckpointError
from taskmerge.finetune.modes import AttentionOnly, FinetuningMode, Linearized
from taskmerge.interop import importer
from taskmerge.interop.hub import fetch, parse_hub_source
from taskmerge.models.tiny import TINY_MODEL_NAME

log = logging.getLogger("taskmerge")


def import_job(cfg: DictConfig) -> importer.ImportReport:
    """Fetch (``hf://``) or read the source and import it; log what was imported."""
    explicit = [cfg.task] if cfg.task else (list(cfg.DATASETS) if cfg.DATASETS else None)
    if explicit:
        resolve_task_specs(explicit)
    source = str(cfg.source)
    hub = parse_hub_source(source)
    if hub is None and not Path(source).expanduser().exists():
        raise CheckpointError(f"source={source} does not exist: give a folder, a file or hf://...")
    if hub is not None:  # the source first: it is what the user asked for
        fusion = "/" not in hub
        name = str(cfg.model.get("name", TINY_MODEL_NAME))
        root = fetch(source, name, (explicit or task_names(cfg)) if fusion else [])
    else:
        root = Path(source).expanduser()
    model = load_pretrained(cfg)
    standard = model.store(cfg.paths.checkpoints, FinetuningMode())
    if cfg.task:  # one plain state-dict file
        if not root.is_file():
            raise CheckpointError(f"source={root} is not a file: task= imports one state dict")
        if not cfg.overwrite:
            importer.check_not_foreign(standard, cfg.task)
        importer.import_one(
            importer.Source(cfg.task, root, "open_clip"),
            standard,
            importer.Discovery("open_clip", []),
        )
        report = importer.ImportReport(imported=[cfg.task])
    else:
        linear = model.store(cfg.paths.checkpoints, Linearized())
        attention = model.store(cfg.paths.checkpoints, AttentionOnly())  # linear-2's files
        report = importer.import_checkpoints(
            root, model.bundle.name, standard, linear, explicit, cfg.layout, cfg.overwrite,
            attention_store=attention,
        )  # fmt: skip
    where = standard.layout.mode_dir
    log.info("imported %s; unchanged %s", report.imported or "-", report.skipped or "-")
    if report.masks:
        log.info("published TALL masks %s -> %s", report.masks, standard.mask_dir)
    log.info("checkpoints in %s (fine-tuned accuracies are measured on first use)", where)
    return report
