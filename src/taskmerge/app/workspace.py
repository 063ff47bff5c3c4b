"""What a job works with, built once from the config: the pretrained model, the tasks' data and
heads, the evaluator and the checkpoint store of the configured fine-tuning mode."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from taskmerge.app.config import finetune_command, instantiate, task_names
from taskmerge.data.task_data import TaskData
from taskmerge.data.task_lists import resolve_task_specs
from taskmerge.errors import ConfigError
from taskmerge.evaluate.evaluator import TaskEvaluator, open_evaluator
from taskmerge.evaluate.references import measure_finetuned
from taskmerge.finetune.distributed import check_world_size, launched_by_torchrun
from taskmerge.finetune.loop import TrainSettings
from taskmerge.finetune.modes import FinetuningMode
from taskmerge.finetune.task import finetune_task
from taskmerge.hardware import check_precision, resolve_device, resolve_workers
from taskmerge.io.atomic import check_writable
from taskmerge.io.digest import fingerprint
from taskmerge.models.clip import ClipBundle
from taskmerge.models.forward import check_forward
from taskmerge.models.heads import HeadBank
from taskmerge.store.checkpoints import CheckpointStore
from taskmerge.store.locks import task_lock

log = logging.getLogger("taskmerge")


@dataclass
class PretrainedModel:
    """The configured CLIP, its image tower's weights (a private copy) and their fingerprint."""

    bundle: ClipBundle
    weights: dict[str, torch.Tensor]
    fingerprint: str

    def store(self, root: str | Path, mode: FinetuningMode) -> CheckpointStore:
        """The checkpoint store of these weights in one fine-tuning mode under ``root``."""
        return CheckpointStore(
            root, self.bundle.name, self.bundle.pretrained, mode, self.weights, self.fingerprint
        )


def load_pretrained(cfg: DictConfig) -> PretrainedModel:
    """Instantiate ``cfg.model`` and fingerprint its image tower."""
    bundle = instantiate(cfg.model)
    weights = {k: v.detach().clone() for k, v in bundle.visual.state_dict().items()}
    return PretrainedModel(bundle, weights, fingerprint(weights))


@dataclass
class Workspace:
    """Everything one job of ``main.py`` / ``finetune.py`` / ``analyze.py`` needs."""

    model: PretrainedModel
    mode: FinetuningMode
    train: TrainSettings
    data: TaskData
    heads: HeadBank
    evaluator: TaskEvaluator
    store: CheckpointStore

    @property
    def tasks(self) -> list[str]:
        """Task names in order."""
        return self.data.task_names

    @property
    def encoder(self) -> nn.Module:
        """The pretrained image tower (the module whose state dict is merged)."""
        return self.model.bundle.visual

    @property
    def pretrained(self) -> dict[str, torch.Tensor]:
        """The pretrained image tower's weights."""
        return self.model.weights

    @classmethod
    def open(
        cls,
        cfg: DictConfig,
        mode_node: DictConfig | None = None,
        forward: str | None = None,
        names: Sequence[str] | None = None,
    ) -> Workspace:
        """Resolve the tasks, check the run settings, load the model and build the rest.

        The evaluator's forward is ``forward``, else ``eval_forward`` when set (a cast: e.g.
        standard checkpoints through the linearized model, "post-hoc linearization"), else the
        mode's own. ``mode_node`` replaces ``cfg.finetuning`` and ``names`` the task list (the
        analyses compare several modes on a task pair).
        """
        convention = cfg.tasks.get("convention", "tall_masks")
        specs = resolve_task_specs(list(names) if names else task_names(cfg), convention)
        mode = instantiate(mode_node if mode_node is not None else cfg.finetuning)
        forward = check_forward(forward or cfg.get("eval_forward") or mode.forward)
        train = instantiate(cfg.train)
        if cfg.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size={cfg.eval_batch_size}: use a batch size >= 1")
        workers = resolve_workers(cfg.num_workers)
        precision = check_precision(cfg.get("eval_precision", "fp32"))
        device = resolve_device(cfg.device)
        check_world_size(int(cfg.get("world_size", 1)), train.batch_size, device)
        if cfg.get("limit_samples") is not None:
            log.warning("limit_samples=%d: only the first %d samples of each split are used: a "
                        "subset run (sizes unchecked), not comparable to published numbers",
                        cfg.limit_samples, cfg.limit_samples)  # fmt: skip
        model = load_pretrained(cfg)
        evaluator = open_evaluator(
            model.bundle, specs, cfg.paths.data, cfg.paths.cache, device=device,
            batch_size=cfg.eval_batch_size, num_workers=workers, forward=forward,
            precision=precision, params0=model.weights,
            decode_once=list(cfg.get("decode_once", ["val"])),
            limit_samples=cfg.get("limit_samples"),
        )  # fmt: skip
        store = model.store(cfg.paths.checkpoints, mode)
        return cls(model, mode, train, evaluator.data, evaluator.heads, evaluator, store)

    def finetune(
        self,
        task: str,
        overwrite: bool = False,
        world_size: int = 1,
        position: tuple[int, int] | None = None,
    ) -> dict[str, float] | None:
        """Fine-tune one task, store the checkpoint and its fine-tuned Val / Test top-1 (through
        the evaluator's forward); None on the other processes of a distributed run.
        ``position`` (i, N): the task's place among those fine-tuned now (shown in the bar)."""
        done = finetune_task(
            task, self.encoder, self.data, self.heads, self.store, self.train, self.mode,
            self.evaluator.device, overwrite=overwrite, world_size=world_size, position=position,
        )  # fmt: skip
        if done is None:
            return None
        state, stats = done
        train = {f"train_{key}": value for key, value in stats.items()}
        metrics = measure_finetuned(self.store, self.evaluator, task, state, extra=train)
        log.info("fine-tuned %s: val %.4f test %.4f", task, metrics["val_top1"],
                 metrics["test_top1"])  # fmt: skip
        return metrics

    def ensure_checkpoints(self, finetune_missing: bool, world_size: int = 1) -> None:
        """Fine-tune the missing checkpoints where allowed; else fail, before any long work.

        Each task is fine-tuned under its directory's lock: a concurrent job that needs the same
        checkpoint waits and then reuses it (see :mod:`taskmerge.store.locks`).
        """
        missing = self.store.missing(self.tasks)
        if missing and not finetune_missing:
            self.store.require(self.tasks, finetune_command())
        if missing:
            check_writable(self.store.layout.mode_dir)
        for task in missing:  # every task's data is there (and the right size) before any training
            self.data.splits(task)
        if missing:
            self.announce_finetuning(missing)
        for index, task in enumerate(missing, 1):
            lock = nullcontext() if launched_by_torchrun() else task_lock(self.store.task_dir(task))
            with lock:
                if self.store.path(task).is_file():
                    log.info("%s: fine-tuned meanwhile by another job, reused", task)
                    continue
                self.finetune(task, world_size=world_size, position=(index, len(missing)))

    def announce_finetuning(self, tasks: Sequence[str]) -> str:
        """Log (and return) the line that says what is fine-tuned now, how long each task
        trains, on which device and where the checkpoints go."""
        epochs = sorted({self.data.specs[t].epochs for t in tasks})
        each = "/".join(f"{e:g}" for e in epochs)
        line = (
            f"fine-tuning {len(tasks)} missing checkpoint{'s' * (len(tasks) != 1)} "
            f"({', '.join(tasks)}), {each} epochs each, mode {self.mode.name} on "
            f"{self.evaluator.device}, into {self.store.layout.mode_dir}"
        )
        log.info(line)
        return line
