"""A task's three splits: the reference Val protocol (10% of the official training set, at most
5000 samples, seed 0) carved out of train, and the official test split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from taskmerge.data.image_datasets import TransformedDataset, materialize
from taskmerge.data.spec import TaskSpec
from taskmerge.errors import DataNotFoundError

log = logging.getLogger("taskmerge")

VAL_FRACTION = 0.1
MAX_VAL_SAMPLES = 5000
SPLIT_SEED = 0


def val_size_for(train_size: int) -> int:
    """Number of training samples carved out as the Val split."""
    return min(int(train_size * VAL_FRACTION), MAX_VAL_SAMPLES)


def split_train_val(dataset: Dataset, seed: int = SPLIT_SEED) -> tuple[Subset, Subset]:
    """Split an official training set into (train, Val) as the reference repos do.

    Uses ``torch.utils.data.random_split`` with a generator seeded by ``seed`` and lengths
    ``[n - v, v]``, so the indices match ``mlfoundations/task_vectors`` and its descendants.
    """
    total = len(dataset)  # type: ignore[arg-type]
    val_size = val_size_for(total)
    generator = torch.Generator().manual_seed(seed)
    train, val = torch.utils.data.random_split(
        dataset, [total - val_size, val_size], generator=generator
    )
    return train, val


def own_val_split(spec: TaskSpec, root: Path, train: Dataset) -> tuple[Dataset, Dataset] | None:
    """(the whole train split, the dataset's own Val) for a task whose reference uses its own
    val split (EuroSAT's ``EuroSAT_splits/val``); None for the others, or (with one warning)
    when the copy has no val split: Val is then carved out of train."""
    if not spec.own_val:
        return None
    try:
        return train, spec.load_split(root, "val")
    except (DataNotFoundError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:100]
        log.warning("%s: no val split under %s (%s): Val is carved out of train, not the "
                    "reference's own val split", spec.name, root, reason)  # fmt: skip
        return None


@dataclass
class TaskSplits:
    """The three splits of one task, preprocessed for one model."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset


def load_task_splits(
    spec: TaskSpec, data_root: str | Path, preprocess: Callable, preload: bool = False
) -> TaskSplits:
    """Official train split minus Val (10%, at most 5000, seed 0), Val, and the test split.

    Args:
        preload: Run the preprocessing once and keep the tensors in memory (for small data sets
            such as the offline demo; the real ones are streamed).
    """
    root = Path(data_root).expanduser()
    train_full = spec.load_split(root, "train")
    test = spec.load_split(root, "test")
    train, val = own_val_split(spec, root, train_full) or split_train_val(train_full)
    splits = [TransformedDataset(part, preprocess) for part in (train, val, test)]
    if preload:
        splits = [materialize(part) for part in splits]
    return TaskSplits(spec.name, *splits)
