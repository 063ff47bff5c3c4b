"""Digests: of a state dict's contents (the pretrained fingerprint) and of a file (sha256)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short, stable hash of a state dict's keys, shapes and values."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def sha256(path: str | Path) -> str:
    """The sha256 of a file (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
