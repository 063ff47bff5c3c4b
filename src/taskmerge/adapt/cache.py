"""Per-task statistics (Gram matrices, Fishers) cached beside the task's checkpoint.

One safetensors file per (statistic, settings) in ``<task dir>/statistics/``, named by a digest
of the checkpoint's checksum and the settings (number of samples, seed, forward): a new
fine-tuned checkpoint gets new statistics, an unchanged one reuses them across merges. Files
are written atomically with a checksum (:func:`taskmerge.io.tensors.save_state_dict`); a
damaged one is computed again. Read back lazily, one tensor per lookup.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from taskmerge.io.tensors import float_keys, read_tensor, save_state_dict, verify_checksum

log = logging.getLogger(__name__)


class StoredTensors(Mapping[str, torch.Tensor]):
    """The tensors of a safetensors file, one read per lookup."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = float_keys(path)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return read_tensor(self.path, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class StatisticCache:
    """Where each task's statistics live: ``directory_of(task)`` (None: not cached) and the
    checksum of its checkpoint (``checksum_of(task)``; None: not cached)."""

    def __init__(
        self,
        directory_of: Callable[[str], Path | None],
        checksum_of: Callable[[str], str | None],
    ) -> None:
        self.directory_of, self.checksum_of = directory_of, checksum_of

    def path(self, kind: str, task: str, settings: Mapping[str, Any]) -> Path | None:
        """The file of one statistic, or None when the task's checkpoint is not known."""
        directory, checksum = self.directory_of(task), self.checksum_of(task)
        if directory is None or checksum is None:
            return None
        key = json.dumps({"checkpoint": checksum, **settings}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return Path(directory) / "statistics" / f"{kind}-{digest}.safetensors"

    def get(
        self,
        kind: str,
        task: str,
        settings: Mapping[str, Any],
        compute: Callable[[], dict[str, torch.Tensor]],
    ) -> Mapping[str, torch.Tensor]:
        """The cached statistic, or ``compute()`` stored for the next merge."""
        path = self.path(kind, task, settings)
        if path is None:
            return compute()
        if path.is_file():
            try:
                verify_checksum(path, fix="it is computed again")
                return StoredTensors(path)
            except Exception as exc:  # noqa: BLE001 - any damage: compute again
                log.warning("%s is unreadable (%s): computed again", path, exc)
        values = compute()
        meta = {"task": task, "kind": kind, **{k: json.dumps(v) for k, v in settings.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_state_dict(values, path, meta)
        return StoredTensors(path)
