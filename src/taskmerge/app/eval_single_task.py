"""``eval_single_task.py``: each task's fine-tuned encoder (or, with ``evaluate=zeroshot``, the
pretrained one) scored on that task's Val and Test splits, as the reference repos'
``eval_single_task.py --finetuning-mode=standard|linear|linear-2|posthoc|none`` report them."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from taskmerge.app.config import run_dir
from taskmerge.app.preflight import check_writable_all
from taskmerge.app.workspace import Workspace
from taskmerge.evaluate.references import finetuned_accuracies, zeroshot_accuracies
from taskmerge.io.atomic import write_json

log = logging.getLogger("taskmerge")

#: The file the accuracies are written to, in the run directory.
ACCURACIES_FILE = "accuracies.json"


def eval_single_task_job(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Task -> ``val_top1`` / ``test_top1``; written to ``<run dir>/accuracies.json``.

    The fine-tuned accuracies are the ones ``main.py`` normalizes by (measured through the
    evaluator's forward and stored with the checkpoints); the zero-shot ones are cached.
    """
    directory = run_dir()
    workspace = Workspace.open(cfg)
    zeroshot = cfg.evaluate == "zeroshot"
    places = [directory, cfg.paths.cache]
    if not zeroshot:
        workspace.ensure_checkpoints(cfg.finetune_missing, cfg.world_size)
        places.append(workspace.store.layout.mode_dir)  # the measured accuracies are kept there
    check_writable_all(places)
    if zeroshot:
        by_split = zeroshot_accuracies(workspace.evaluator, workspace.pretrained)
        accuracies = {
            task: {f"{split}_top1": by_split[split][task] for split in by_split}
            for task in workspace.tasks
        }
    else:
        accuracies = finetuned_accuracies(workspace.store, workspace.evaluator, workspace.tasks)
    for task, top1 in accuracies.items():
        log.info("%s: val top-1 %.2f%%, test top-1 %.2f%%", task, 100 * top1["val_top1"],
                 100 * top1["test_top1"])  # fmt: skip
    evaluated = "zeroshot" if zeroshot else workspace.mode.name
    write_json(
        {
            "model": workspace.model.bundle.name,
            "pretrained": workspace.model.bundle.pretrained,
            "evaluated": evaluated,
            "eval_forward": workspace.evaluator.forward,
            "accuracies": accuracies,
        },
        directory / ACCURACIES_FILE,
    )
    log.info("%s accuracies of %d tasks in %s", evaluated, len(accuracies),
             directory / ACCURACIES_FILE)  # fmt: skip
    return accuracies
