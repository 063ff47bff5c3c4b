"""Image datasets: the ``(PIL.Image, int)`` items the task loaders return (no transform
applied), the transform wrapper, and loaders.

They are module-level classes holding plain data (arrays, paths, an Arrow table), so DataLoader
workers can pickle them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = [
    "ArrayImageDataset",
    "FileImageDataset",
    "HFImageDataset",
    "TransformedDataset",
    "TransposedImages",
    "make_loader",
    "materialize",
]


class ArrayImageDataset(Dataset):
    """Images held in one uint8 array (N, H, W[, C]) with integer labels."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images)
        self.targets = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


class FileImageDataset(Dataset):
    """Image files with integer labels, opened with PIL (converted to ``mode`` if given)."""

    def __init__(self, samples: Sequence[tuple[str, int]], mode: str | None = "RGB") -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            image.load()
            return (image.convert(self.mode) if self.mode else image.copy()), label


class HFImageDataset(Dataset):
    """Rows of a Hugging Face ``datasets.Dataset`` as ``(PIL.Image, int)``."""

    def __init__(
        self, table: Any, image_key: str, label_key: str, label_map: Sequence[int] | None
    ) -> None:
        self.table = table.select_columns([image_key, label_key])
        self.image_key = image_key
        self.label_key = label_key
        self.label_map = tuple(label_map) if label_map is not None else None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        row = self.table[int(index)]
        label = int(row[self.label_key])
        if self.label_map is not None:
            label = self.label_map[label]
        return _to_pil(row[self.image_key]), label


class TransposedImages(Dataset):
    """Wraps a dataset and transposes every image (EMNIST stored column-major -> upright)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        return image.transpose(Image.Transpose.TRANSPOSE), label


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


def _to_pil(value: Any) -> Any:
    """A PIL image from whatever an HF column holds (PIL image, bytes, dict with bytes, array)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            return Image.open(value["path"])
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    return Image.fromarray(np.asarray(value, dtype=np.uint8))
