"""Where the fine-tuned checkpoints of one model and fine-tuning mode live, checked on read.

Layout (one directory per model, fine-tuning mode and task)::

    <root>/<model>/<finetuning>/<Task>/finetuned.safetensors   image-encoder state dict
    <root>/<model>/<finetuning>/<Task>/metrics.json            fine-tuned Val/Test top-1
    <root>/<model>/<finetuning>/masks/                         TALL-mask files of the merges

The safetensors header records the model, pretrained tag, task, mode and the fingerprint of the
pretrained weights; a checkpoint fine-tuned from other weights is refused with a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from taskmerge.checkpoints import (
    FINETUNED_FILE,
    METRICS_FILE,
    StateDict,
    check_compatible,
    check_shapes,
    load_state_dict,
    read_metadata,
    save_state_dict,
    task_dir,
    tensor_shapes,
    write_json,
)
from taskmerge.errors import CheckpointError
from taskmerge.task_vectors import TaskVector

CHECKPOINT_FORMAT = "taskmerge/image-encoder-state-dict/v1"


class CheckpointStore:
    """The fine-tuned checkpoints of one pretrained model and one fine-tuning mode.

    Args:
        root: The checkpoints root (``paths.checkpoints``).
        model: The model's directory name (e.g. ``ViT-B-32``).
        pretrained_tag: The pretrained weights' tag or path (recorded in headers).
        finetuning: The fine-tuning mode's name (a directory level).
        pretrained: The pretrained image-encoder state dict (in memory).
        fingerprint: Its :func:`~taskmerge.checkpoints.fingerprint`.
    """

    def __init__(
        self,
        root: str | Path,
        model: str,
        pretrained_tag: str,
        finetuning: str,
        pretrained: Mapping[str, torch.Tensor],
        fingerprint: str,
    ) -> None:
        self.root = Path(root).expanduser()
        self.model, self.pretrained_tag, self.finetuning = model, pretrained_tag, finetuning
        self.pretrained, self.fingerprint = pretrained, fingerprint

    # ------------------------------------------------------------------ layout
    def task_dir(self, task: str) -> Path:
        """Directory of one task's checkpoint and metrics."""
        return task_dir(self.root, self.model, self.finetuning, task)

    def path(self, task: str) -> Path:
        """The fine-tuned checkpoint file of one task (it may not exist yet)."""
        return self.task_dir(task) / FINETUNED_FILE

    @property
    def mask_dir(self) -> Path:
        """Where merge methods keep their TALL-mask files for these checkpoints."""
        return self.root / self.model / self.finetuning / "masks"

    def missing(self, tasks: Sequence[str]) -> list[str]:
        """Tasks whose fine-tuned checkpoint is absent."""
        return [task for task in tasks if not self.path(task).is_file()]

    def require(self, tasks: Sequence[str], finetune_command: str) -> None:
        """Fail in one message, before any long work, if checkpoints are missing.

        Raises:
            CheckpointError: naming the tasks, where they were looked for and the fix.
        """
        missing = self.missing(tasks)
        if missing:
            raise CheckpointError(
                f"no fine-tuned checkpoint for {missing} under {self.task_dir(missing[0]).parent}:"
                f" run `{finetune_command} tasks.names=[{','.join(missing)}]`, or set "
                "paths.checkpoints to where they are"
            )

    # ------------------------------------------------------------------ reading
    def checkpoint(self, task: str) -> Path:
        """One task's checkpoint, checked from its header only (keys, shapes, the pretrained
        fingerprint) to come from these pretrained weights.

        Raises:
            CheckpointError: missing, another architecture, or other pretrained weights.
        """
        path = self.path(task)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        check_shapes(
            tensor_shapes(path),
            {key: tuple(value.shape) for key, value in self.pretrained.items()},
            str(path),
        )
        origin = read_metadata(path).get("pretrained_fingerprint")
        if origin and origin != self.fingerprint:
            raise CheckpointError(
                f"{path} was fine-tuned from other pretrained weights (fingerprint {origin}, "
                f"expected {self.fingerprint}): re-run finetune.py for {task} or point "
                "paths.checkpoints elsewhere"
            )
        return path

    def load(self, task: str) -> StateDict:
        """One task's fine-tuned encoder weights, checked as :meth:`checkpoint`."""
        path = self.checkpoint(task)
        state = load_state_dict(path)
        check_compatible(state, self.pretrained, str(path))
        return state

    def task_vector(self, task: str) -> TaskVector:
        """One task's vector, read lazily (one tensor at a time) from its checked checkpoint."""
        return TaskVector.lazy(self.pretrained, self.checkpoint(task))

    def task_vectors(self, tasks: Sequence[str]) -> dict[str, TaskVector]:
        """Lazy task vectors of ``tasks``: every checkpoint is checked now, read on use, so
        memory does not grow with the number of tasks."""
        return {task: self.task_vector(task) for task in tasks}

    def metrics(self, task: str) -> dict[str, Any] | None:
        """The stored fine-tuned metrics of one task, if measured for these pretrained weights."""
        path = self.task_dir(task) / METRICS_FILE
        if not path.is_file():
            return None
        metrics = json.loads(path.read_text())
        return metrics if metrics.get("pretrained_fingerprint") == self.fingerprint else None

    # ------------------------------------------------------------------ writing
    def save(self, task: str, state: Mapping[str, torch.Tensor], overwrite: bool = False) -> Path:
        """Write one task's fine-tuned weights (atomically) with the identifying header.

        Raises:
            CheckpointError: a checkpoint exists and ``overwrite`` is false.
        """
        path = self.path(task)
        if path.is_file() and not overwrite:
            raise CheckpointError(f"{path} exists: pass overwrite=true to replace it")
        metadata = {
            "model": self.model,
            "pretrained": self.pretrained_tag,
            "pretrained_fingerprint": self.fingerprint,
            "task": task,
            "finetuning": self.finetuning,
            "format": CHECKPOINT_FORMAT,
        }
        save_state_dict(state, path, metadata)
        return path

    def write_metrics(self, task: str, metrics: Mapping[str, Any]) -> None:
        """Store one task's fine-tuned metrics (atomically), tagged with the fingerprint."""
        record = {**metrics, "pretrained_fingerprint": self.fingerprint}
        write_json(record, self.task_dir(task) / METRICS_FILE)
