"""Scoring encoders on tasks: top-1 accuracy, normalized accuracy, and the task evaluator.

:class:`TaskEvaluator` holds the tasks of one run and everything needed to score an encoder's
weights on them: the preprocessed splits, the loaders, the zero-shot heads and one reusable
encoder module. It knows nothing of checkpoints, merge methods or training.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from taskmerge.data.catalog import is_demo_task
from taskmerge.data.datasets import TaskSplits, load_task_splits, make_loader
from taskmerge.data.registry import TaskSpec
from taskmerge.models.clip import ClipBundle
from taskmerge.models.heads import ClassificationHead, cached_zeroshot_head

StateDict = Mapping[str, torch.Tensor]


@torch.no_grad()
def top1_accuracy(
    encoder: nn.Module, head: nn.Module, loader: DataLoader, device: str | torch.device
) -> float:
    """Fraction of samples whose arg-max logit is the label (over the whole loader)."""
    encoder.eval()
    correct = total = 0
    for images, labels in loader:
        logits = head(encoder(images.to(device, non_blocking=True)))
        correct += int((logits.argmax(dim=1).cpu() == torch.as_tensor(labels)).sum())
        total += len(labels)
    return correct / max(total, 1)


def normalized_accuracy(accuracy: float, finetuned_accuracy: float) -> float:
    """Merged top-1 divided by the fine-tuned top-1 of the same task and split."""
    return accuracy / finetuned_accuracy if finetuned_accuracy > 0 else 0.0


def summarize(accuracies: Mapping[str, float], finetuned: Mapping[str, float]) -> dict[str, float]:
    """Mean absolute and mean normalized accuracy over the tasks of ``accuracies``."""
    names = list(accuracies)
    return {
        "top1": sum(accuracies[n] for n in names) / len(names),
        "normalized_top1": sum(normalized_accuracy(accuracies[n], finetuned[n]) for n in names)
        / len(names),
    }


class Evaluator(Protocol):
    """What a merge experiment needs to score weights: the tasks and an accuracy."""

    task_names: list[str]

    def accuracy(self, state_dict: StateDict, task: str, split: str) -> float:
        """Top-1 of the encoder weights ``state_dict`` on ``task``'s ``split`` (val/test)."""
        ...


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when available, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TaskEvaluator:
    """The tasks of one run: splits, loaders, zero-shot heads and top-1 accuracy of any weights.

    Args:
        bundle: The pretrained CLIP (its image tower's architecture scores the weights; its text
            tower builds the heads; its preprocess transforms the images).
        specs: The tasks, in order.
        data_root: Where the real datasets are (demo tasks are generated under ``cache_dir``).
        cache_dir: Demo data cache.
        heads_dir: Where zero-shot heads are cached (one file per task; the directory must
            identify the model and its pretrained weights).
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size, num_workers: Of the evaluation loaders.
    """

    def __init__(
        self,
        bundle: ClipBundle,
        specs: Sequence[TaskSpec],
        data_root: str | Path,
        cache_dir: str | Path,
        heads_dir: str | Path,
        device: str = "cpu",
        batch_size: int = 256,
        num_workers: int = 4,
    ) -> None:
        self.bundle = bundle
        self.specs = {spec.name: spec for spec in specs}
        self.data_root = Path(data_root).expanduser()
        self.cache_dir = Path(cache_dir).expanduser()
        self.heads_dir = Path(heads_dir).expanduser()
        self.device = resolve_device(device)
        self.batch_size, self.num_workers = batch_size, num_workers
        self._splits: dict[str, TaskSplits] = {}
        self._heads: dict[str, ClassificationHead] = {}
        self._encoder: nn.Module | None = None

    @property
    def task_names(self) -> list[str]:
        """Task names in order."""
        return list(self.specs)

    def root_of(self, task: str) -> Path:
        """Demo tasks are generated into the cache; real ones are read from the data root."""
        return self.cache_dir / "demo-data" if is_demo_task(task) else self.data_root

    def splits(self, task: str) -> TaskSplits:
        """The preprocessed splits of a task (demo ones preloaded into memory)."""
        if task not in self._splits:
            self._splits[task] = load_task_splits(
                self.specs[task],
                self.root_of(task),
                self.bundle.preprocess,
                preload=is_demo_task(task),
            )
        return self._splits[task]

    def train_set(self, task: str) -> Dataset:
        """The training split (official train minus Val)."""
        return self.splits(task).train

    def loader(self, task: str, split: str) -> DataLoader:
        """An evaluation DataLoader over ``val`` or ``test``."""
        dataset = getattr(self.splits(task), split)
        return make_loader(dataset, self.batch_size, shuffle=False, num_workers=self.num_workers)

    def head(self, task: str) -> ClassificationHead:
        """The zero-shot head of a task (built from the text tower once, cached on disk)."""
        if task not in self._heads:
            head = cached_zeroshot_head(
                self.bundle, self.specs[task], self.heads_dir / f"{task}.safetensors", self.device
            )
            self._heads[task] = head.to(self.device)
        return self._heads[task]

    def encoder_with(self, state_dict: StateDict) -> nn.Module:
        """The reusable encoder module loaded with ``state_dict``."""
        if self._encoder is None:
            self._encoder = copy.deepcopy(self.bundle.visual).to(self.device).eval()
        self._encoder.load_state_dict(state_dict)
        return self._encoder

    def accuracy(self, state_dict: StateDict, task: str, split: str) -> float:
        """Top-1 of the encoder weights ``state_dict`` on one task's split."""
        encoder = self.encoder_with(state_dict)
        return top1_accuracy(encoder, self.head(task), self.loader(task, split), self.device)
