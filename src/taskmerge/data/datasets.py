"""Datasets for one task: train / Val / test with the model's preprocessing applied."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from taskmerge.data.registry import TaskSpec
from taskmerge.data.splits import split_train_val


class ImageArrayDataset(Dataset):
    """(PIL image, label) pairs over a uint8 NHWC array, like a torchvision dataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])


class TransformedDataset(Dataset):
    """Applies an image transform to a dataset of (image, label) pairs."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        if isinstance(image, Image.Image) and image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image), label


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
    train, val = split_train_val(train_full)
    splits = [TransformedDataset(part, preprocess) for part in (train, val, test)]
    if preload:
        splits = [materialize(part) for part in splits]
    return TaskSplits(spec.name, *splits)


def materialize(dataset: Dataset, batch_size: int = 512) -> TensorDataset:
    """Evaluate a dataset once into an in-memory ``TensorDataset``."""
    images, labels = [], []
    for batch_images, batch_labels in DataLoader(dataset, batch_size=batch_size):
        images.append(batch_images)
        labels.append(torch.as_tensor(batch_labels))
    return TensorDataset(torch.cat(images), torch.cat(labels))


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0, seed: int = 0
) -> DataLoader:
    """A DataLoader; in-memory tensor datasets skip worker processes."""
    workers = 0 if isinstance(dataset, TensorDataset) else num_workers
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )
