"""Decode once: evaluation splits kept as uint8 image arrays, normalized on the device.

A sweep scores every candidate on every task's Val split. Decoding and resizing the same images
for each candidate dominates the evaluation of real datasets, so the deterministic part of the
model's preprocessing (resize, center crop, RGB) is applied once and its result stored as a
``uint8`` array ``(N, 3, H, W)`` in a ``.npy`` file read memory-mapped; each batch is then
converted to float, divided by 255 and normalized on the evaluation device, exactly what the
preprocessing's ``ToTensor`` + ``Normalize`` compute. The file is written atomically and named by
the task, split, sample count, data root and preprocessing, so another copy of the data or
another model never reads it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from taskmerge.io.atomic import atomic_path

log = logging.getLogger(__name__)


def split_preprocess(preprocess: Callable) -> tuple[Callable, torch.Tensor, torch.Tensor] | None:
    """``(geometric part, mean, std)`` of a ``Compose([... , ToTensor, Normalize])``; None when
    the preprocessing has another structure (then nothing is cached)."""
    transforms = list(getattr(preprocess, "transforms", []))
    if len(transforms) < 2:
        return None
    normalize, to_tensor = transforms[-1], transforms[-2]
    if type(normalize).__name__ != "Normalize" or "ToTensor" not in type(to_tensor).__name__:
        return None
    from torchvision.transforms import Compose

    mean = torch.tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)
    return Compose(transforms[:-2]), mean, std


class _Decoded(Dataset):
    """``(uint8 CHW array, label, (width, height))`` of a dataset of ``(PIL image, label)``
    after ``geometric`` (the size is the image's before it)."""

    def __init__(self, base: Dataset, geometric: Callable) -> None:
        self.base, self.geometric = base, geometric

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        image, label = self.base[index]
        if getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        size = np.asarray(getattr(image, "size", (0, 0)), dtype=np.int64)
        array = np.asarray(self.geometric(image), dtype=np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        return np.ascontiguousarray(array.transpose(2, 0, 1)), int(label), size


class UInt8Images(Dataset):
    """``(uint8 CHW tensor, label)`` read from the memory-mapped array; ``sizes`` holds each
    image's original ``(width, height)`` when it was kept."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, sizes: np.ndarray | None = None
    ) -> None:
        self.images, self.labels, self.sizes = images, labels, sizes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[index])), int(self.labels[index])


def cache_name(task: str, split: str, count: int, root: Path, preprocess: Callable) -> str:
    """The file stem identifying one decoded split."""
    key = hashlib.sha256(f"{Path(root).resolve()}|{preprocess!r}".encode()).hexdigest()[:12]
    return f"{task}-{split}-{count}-{key}"


def decoded_split(
    base: Dataset, geometric: Callable, path: Path, num_workers: int = 0, batch_size: int = 64,
    keep_sizes: bool = False,
) -> UInt8Images:  # fmt: skip
    """The split decoded once into ``path`` (``.npy`` images + ``.labels.npy``, and with
    ``keep_sizes`` the original image sizes in ``.sizes.npy``), or read back."""
    labels_path = path.with_suffix(".labels.npy")
    sizes_path = path.with_suffix(".sizes.npy") if keep_sizes else None
    cached = _read_decoded(path, labels_path, len(base), sizes_path)  # type: ignore[arg-type]
    if cached is not None:
        return cached
    decoded = _Decoded(base, geometric)
    first, _, _ = decoded[0]
    count = len(decoded)
    with atomic_path(path) as tmp:
        images = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(count, *first.shape)
        )
        labels = np.empty(count, dtype=np.int64)
        sizes = np.empty((count, 2), dtype=np.int64)
        loader = DataLoader(decoded, batch_size=batch_size, num_workers=num_workers)
        offset = 0
        for batch, batch_labels, batch_sizes in loader:
            images[offset : offset + len(batch)] = batch.numpy()
            labels[offset : offset + len(batch)] = batch_labels.numpy()
            sizes[offset : offset + len(batch)] = batch_sizes.numpy()
            offset += len(batch)
        images.flush()
        del images
    if sizes_path is not None:
        with atomic_path(sizes_path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, sizes)
    with atomic_path(labels_path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, labels)  # written last: its presence marks a complete split
    return UInt8Images(
        np.load(path, mmap_mode="r"), np.load(labels_path),
        np.load(sizes_path) if sizes_path is not None else None,
    )  # fmt: skip


def _read_decoded(
    path: Path, labels_path: Path, count: int, sizes_path: Path | None = None
) -> UInt8Images | None:
    """The decoded split if its files are there, readable and of ``count`` samples; None
    otherwise (a damaged set is discarded with one warning and decoded again)."""
    wanted = [path, labels_path] + ([sizes_path] if sizes_path is not None else [])
    if not all(p.is_file() for p in wanted):
        return None
    sizes = None
    try:
        images, labels = np.load(path, mmap_mode="r"), np.load(labels_path)
        if images.dtype != np.uint8 or len(images) != count or labels.shape != (count,):
            raise ValueError(f"{len(images)} images, {labels.shape} labels, {count} expected")
        if sizes_path is not None:
            sizes = np.load(sizes_path)
            if sizes.shape != (count, 2) or (sizes <= 0).any():
                raise ValueError(f"image sizes of shape {sizes.shape}, ({count}, 2) expected")
    except (ValueError, OSError, EOFError) as exc:
        log.warning("decoded split %s is unreadable (%s): decoded again", path, exc)
        return None
    return UInt8Images(images, labels, sizes)


def normalizer(
    mean: torch.Tensor, std: torch.Tensor, device: str | torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 batch -> the preprocessing's float tensor, on ``device``."""
    mean, std = mean.to(device), std.to(device)

    def normalize(batch: torch.Tensor) -> torch.Tensor:
        return (batch.to(device, non_blocking=True).float().div(255) - mean) / std

    return normalize
