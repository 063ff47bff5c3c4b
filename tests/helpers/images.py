"""Fabricated image data in the real on-disk formats (idx ubyte files, Hugging Face parquet)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def rng_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 0x803, n, h, w) + images.tobytes()


def idx_labels(labels: list[int]) -> bytes:
    return struct.pack(">II", 0x801, len(labels)) + bytes(labels)


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: list[int], gz: bool) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for name, payload in (
        (f"{prefix}-images-idx3-ubyte", idx_images(images)),
        (f"{prefix}-labels-idx1-ubyte", idx_labels(labels)),
    ):
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (raw / name).write_bytes(payload)


def write_parquet(path: Path, images: list[Image.Image], labels: list[int], names: list[str]):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    table = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(path))
