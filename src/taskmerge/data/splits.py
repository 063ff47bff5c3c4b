"""The reference Val protocol: 10% of the training set (at most 5000 samples), seed 0."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

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
