"""One model and its tasks: data splits, zero-shot heads and fine-tuned checkpoints, cached."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from taskmerge.checkpoints import (
    FINETUNED_FILE,
    METRICS_FILE,
    StateDict,
    check_compatible,
    check_shapes,
    fingerprint,
    load_state_dict,
    read_metadata,
    save_state_dict,
    task_dir,
    tensor_shapes,
    write_json,
)
from taskmerge.data.catalog import is_demo_task
from taskmerge.data.datasets import TaskSplits, load_task_splits, make_loader
from taskmerge.data.registry import TaskSpec
from taskmerge.errors import CheckpointError
from taskmerge.evaluation import top1_accuracy
from taskmerge.finetuning import FinetuningMode
from taskmerge.models.clip import ClipBundle
from taskmerge.models.heads import ClassificationHead, zeroshot_weights
from taskmerge.training import TrainSettings, finetune

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """Where things live and how to run (built from the ``paths`` and run config)."""

    checkpoints: Path
    data_root: Path
    cache_dir: Path
    finetuning: FinetuningMode = field(default_factory=FinetuningMode)
    train: TrainSettings = field(default_factory=TrainSettings)
    device: str = "cpu"
    eval_batch_size: int = 256
    num_workers: int = 4
    finetune_missing: bool = False
    finetune_command: str = "python finetune.py"


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when available, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Workspace:
    """Data, heads and checkpoints for one pretrained model and a list of tasks."""

    def __init__(self, bundle: ClipBundle, specs: list[TaskSpec], settings: Settings) -> None:
        self.bundle = bundle
        self.specs = {spec.name: spec for spec in specs}
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.pretrained: StateDict = {
            k: v.detach().clone() for k, v in bundle.visual.state_dict().items()
        }
        self.pretrained_fingerprint = fingerprint(self.pretrained)
        self._splits: dict[str, TaskSplits] = {}
        self._heads: dict[str, ClassificationHead] = {}
        self._encoder: nn.Module | None = None

    # ------------------------------------------------------------------ naming
    @property
    def task_names(self) -> list[str]:
        """Task names in order."""
        return list(self.specs)

    @property
    def model_dir_name(self) -> str:
        """Directory name of this model in caches and checkpoint roots."""
        return self.bundle.name

    def checkpoint_dir(self, task: str) -> Path:
        """Directory of one task's fine-tuned checkpoint."""
        return task_dir(
            self.settings.checkpoints, self.model_dir_name, self.settings.finetuning.name, task
        )

    # ------------------------------------------------------------------ data and heads
    def data_root(self, task: str) -> Path:
        """Demo tasks are generated into the cache; real ones are read from the data root."""
        if is_demo_task(task):
            return Path(self.settings.cache_dir).expanduser() / "demo-data"
        return Path(self.settings.data_root).expanduser()

    def splits(self, task: str) -> TaskSplits:
        """The preprocessed splits of a task (demo ones preloaded into memory)."""
        if task not in self._splits:
            self._splits[task] = load_task_splits(
                self.specs[task],
                self.data_root(task),
                self.bundle.preprocess,
                preload=is_demo_task(task),
            )
        return self._splits[task]

    def loader(self, task: str, split: str):  # noqa: ANN201
        """An evaluation DataLoader over ``val`` or ``test``."""
        dataset = getattr(self.splits(task), split)
        return make_loader(
            dataset,
            self.settings.eval_batch_size,
            shuffle=False,
            num_workers=self.settings.num_workers,
        )

    def head(self, task: str) -> ClassificationHead:
        """The zero-shot head of a task, built from the text tower once and cached on disk."""
        if task not in self._heads:
            spec = self.specs[task]
            path = (
                Path(self.settings.cache_dir).expanduser()
                / "heads"
                / self.model_dir_name
                / f"{self.bundle.pretrained.replace('/', '_')}-{self.pretrained_fingerprint}"
                / f"{task}.safetensors"
            )
            if path.is_file():
                weight = load_file(str(path))["weight"]
            else:
                weight = zeroshot_weights(
                    self.bundle.model,
                    self.bundle.tokenizer,
                    spec.classnames,
                    spec.templates,
                    self.device,
                )
                save_state_dict({"weight": weight}, path, {"task": task})
            self._heads[task] = ClassificationHead(weight).to(self.device)
        return self._heads[task]

    # ------------------------------------------------------------------ evaluation
    def encoder_with(self, state_dict: StateDict) -> nn.Module:
        """A reusable encoder module loaded with ``state_dict``."""
        if self._encoder is None:
            self._encoder = copy.deepcopy(self.bundle.visual).to(self.device).eval()
        self._encoder.load_state_dict(state_dict)
        return self._encoder

    def accuracy(self, state_dict: StateDict, task: str, split: str) -> float:
        """Top-1 of the encoder weights ``state_dict`` on one task's split."""
        encoder = self.encoder_with(state_dict)
        return top1_accuracy(encoder, self.head(task), self.loader(task, split), self.device)

    # ------------------------------------------------------------------ checkpoints
    def missing_checkpoints(self) -> list[str]:
        """Tasks whose fine-tuned checkpoint is absent."""
        return [
            t for t in self.task_names if not (self.checkpoint_dir(t) / FINETUNED_FILE).is_file()
        ]

    def check_checkpoints(self) -> None:
        """Fail early, in one message, if checkpoints are missing and may not be produced here."""
        missing = self.missing_checkpoints()
        if missing and not self.settings.finetune_missing:
            where = self.checkpoint_dir(missing[0]).parent
            raise CheckpointError(
                f"no fine-tuned checkpoint for {missing} under {where}: run "
                f"`{self.settings.finetune_command} tasks.names=[{','.join(missing)}]`, or set "
                "paths.checkpoints to where they are"
            )

    def finetuned_checkpoint(self, task: str) -> Path:
        """The path of one task's fine-tuned checkpoint, checked (from its header only: keys,
        shapes, pretrained fingerprint) to come from these pretrained weights."""
        path = self.checkpoint_dir(task) / FINETUNED_FILE
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        check_shapes(
            tensor_shapes(path),
            {key: tuple(value.shape) for key, value in self.pretrained.items()},
            str(path),
        )
        origin = read_metadata(path).get("pretrained_fingerprint")
        if origin and origin != self.pretrained_fingerprint:
            raise CheckpointError(
                f"{path} was fine-tuned from other pretrained weights (fingerprint {origin}, "
                f"expected {self.pretrained_fingerprint}): re-run finetune.py for {task} or point "
                "paths.checkpoints elsewhere"
            )
        return path

    def finetuned_state_dict(self, task: str) -> StateDict:
        """One task's fine-tuned encoder, checked to come from these pretrained weights."""
        path = self.finetuned_checkpoint(task)
        state = load_state_dict(path)
        check_compatible(state, self.pretrained, str(path))
        return state

    def finetuned_metrics(self, task: str) -> dict[str, float]:
        """Fine-tuned Val/test top-1 measured by this project (re-measured if absent)."""
        path = self.checkpoint_dir(task) / METRICS_FILE
        if path.is_file():
            metrics = json.loads(path.read_text())
            if metrics.get("pretrained_fingerprint") == self.pretrained_fingerprint:
                return metrics
        state = self.finetuned_state_dict(task)
        metrics = {
            "val_top1": self.accuracy(state, task, "val"),
            "test_top1": self.accuracy(state, task, "test"),
            "pretrained_fingerprint": self.pretrained_fingerprint,
        }
        write_json(metrics, path)
        return metrics

    def finetune_task(self, task: str, overwrite: bool = False) -> dict[str, float]:
        """Fine-tune the encoder on one task and write the checkpoint and its metrics."""
        directory = self.checkpoint_dir(task)
        if (directory / FINETUNED_FILE).is_file() and not overwrite:
            raise CheckpointError(
                f"{directory / FINETUNED_FILE} exists: pass overwrite=true to replace it"
            )
        spec = self.specs[task]
        encoder = copy.deepcopy(self.bundle.visual)
        stats = finetune(
            encoder,
            self.head(task),
            self.splits(task).train,
            spec.epochs,
            self.settings.train,
            self.settings.finetuning,
            self.device,
            description=f"fine-tuning {task}",
        )
        state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
        metadata = {
            "model": self.bundle.name,
            "pretrained": self.bundle.pretrained,
            "pretrained_fingerprint": self.pretrained_fingerprint,
            "task": task,
            "finetuning": self.settings.finetuning.name,
            "format": "taskmerge/image-encoder-state-dict/v1",
        }
        save_state_dict(state, directory / FINETUNED_FILE, metadata)
        metrics = {
            "val_top1": self.accuracy(state, task, "val"),
            "test_top1": self.accuracy(state, task, "test"),
            "pretrained_fingerprint": self.pretrained_fingerprint,
            **{f"train_{k}": v for k, v in stats.items()},
        }
        write_json(metrics, directory / METRICS_FILE)
        log.info(
            "fine-tuned %s: val %.4f test %.4f", task, metrics["val_top1"], metrics["test_top1"]
        )
        return metrics

    def ensure_finetuned(self) -> None:
        """Fine-tune every missing task (only where allowed; see :meth:`check_checkpoints`)."""
        self.check_checkpoints()
        for task in self.missing_checkpoints():
            self.finetune_task(task)
