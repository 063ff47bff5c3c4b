"""The fine-tuned checkpoints of one model and fine-tuning mode, checked on read.

Where they live is :class:`taskmerge.store.layout.CheckpointLayout`. The safetensors header records
the model, pretrained tag, task, the fine-tuning mode (its name, forward and, for ``pattern``, its
patterns) and the fingerprint of the pretrained weights; a checkpoint fine-tuned from other weights,
or in another mode, is refused with a clear error. ``metrics.json`` holds the fine-tuned accuracies
per forward they were measured through (``nonlinear`` / ``linear``), since normalized accuracy
divides by the matching one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from taskmerge.errors import CheckpointError
from taskmerge.io.atomic import write_json
from taskmerge.io.checks import check_compatible, check_dtypes, check_finite, check_shapes
from taskmerge.io.tensors import (
    CHECKSUM_KEY,
    StateDict,
    load_state_dict,
    read_metadata,
    save_state_dict,
    tensor_shapes,
    verify_checksum,
)
from taskmerge.store.layout import CheckpointLayout
from taskmerge.vectors.task_vector import TaskVector

log = logging.getLogger(__name__)


class ModeIdentity(Protocol):
    """What a fine-tuning mode tells its checkpoints (see :mod:`taskmerge.finetune.modes`)."""

    name: str
    forward: str

    def fingerprint(self) -> str:
        """The mode's spec as canonical JSON (recorded in the header)."""
        ...


CHECKPOINT_FORMAT = "taskmerge/image-encoder-state-dict/v1"
#: The format of a merged model written by ``taskmerge.merge(save_to=...)``: never a fine-tuned
#: checkpoint.
MERGED_FORMAT = "taskmerge/merged-image-encoder/v1"


class CheckpointStore:
    """The fine-tuned checkpoints of one pretrained model and one fine-tuning mode.

    Args:
        root: The checkpoints root (``paths.checkpoints``).
        model: The model's directory name (e.g. ``ViT-B-32``).
        pretrained_tag: The pretrained weights' tag or path (recorded in headers).
        mode: The fine-tuning mode (its name is a directory level).
        pretrained: The pretrained image-encoder state dict (in memory).
        fingerprint: Its :func:`~taskmerge.io.digest.fingerprint`.
    """

    def __init__(
        self,
        root: str | Path,
        model: str,
        pretrained_tag: str,
        mode: ModeIdentity,
        pretrained: Mapping[str, torch.Tensor],
        fingerprint: str,
    ) -> None:
        self.root = Path(root).expanduser()
        self.model, self.pretrained_tag, self.mode = model, pretrained_tag, mode
        self.finetuning = mode.name
        self.layout = CheckpointLayout(self.root, model, mode.name)
        self.pretrained, self.fingerprint = pretrained, fingerprint

    # ------------------------------------------------------------------ layout
    def task_dir(self, task: str) -> Path:
        """Directory of one task's checkpoint and metrics."""
        return self.layout.task_dir(task)

    def path(self, task: str) -> Path:
        """The fine-tuned checkpoint file of one task (it may not exist yet)."""
        return self.layout.finetuned(task)

    @property
    def mask_dir(self) -> Path:
        """Where merge methods keep their TALL-mask files for these checkpoints."""
        return self.layout.mask_dir

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
        """One task's checkpoint, checked to be a fine-tuned copy of these pretrained weights:
        its header (keys, shapes, dtypes, the pretrained fingerprint, the mode, the task, not a
        merged model) and its bytes (the checksum its header records).

        Raises:
            CheckpointError: missing, another architecture, other pretrained weights, another
                mode or task, a merged model, or altered bytes.
        """
        path = self.path(task)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        check_shapes(
            tensor_shapes(path),
            {key: tuple(value.shape) for key, value in self.pretrained.items()},
            str(path),
        )
        check_dtypes(path, self.pretrained)
        header = read_metadata(path)
        self._check_kind(path, task, header)
        verify_checksum(path)
        origin = header.get("pretrained_fingerprint")
        if origin and origin != self.fingerprint:
            raise CheckpointError(
                f"{path} was fine-tuned from other pretrained weights (fingerprint {origin}, "
                f"expected {self.fingerprint}): re-run finetune.py for {task} or point "
                "paths.checkpoints elsewhere"
            )
        self._check_mode(path, header)
        return path

    def _check_kind(self, path: Path, task: str, header: Mapping[str, str]) -> None:
        """A fine-tuned checkpoint of ``task``, not a merged model or another task's file."""
        if header.get("format") == MERGED_FORMAT:
            raise CheckpointError(
                f"{path} is a merged model ({header.get('method')} of {header.get('tasks')}), "
                f"not the fine-tuned checkpoint of {task}: move it out of the checkpoints folder "
                f"and re-run finetune.py (or import_checkpoints.py) for {task}"
            )
        recorded = header.get("task")
        if recorded and recorded != task:
            raise CheckpointError(
                f"{path} is the checkpoint of {recorded}, not of {task}: put it back in the "
                f"{recorded} folder, or re-run finetune.py for {task}"
            )

    def _check_mode(self, path: Path, header: Mapping[str, str]) -> None:
        """The checkpoint was fine-tuned in this store's mode (name and, where recorded, spec)."""
        recorded = header.get("finetuning")
        if recorded and recorded != self.finetuning:
            raise CheckpointError(
                f"{path} was fine-tuned with finetuning={recorded}, this run uses "
                f"finetuning={self.finetuning}: run with finetuning={recorded} (add "
                "eval_forward=linear|nonlinear to evaluate it through another forward)"
            )
        spec = header.get("finetuning_spec")
        if spec and spec != self.mode.fingerprint():
            raise CheckpointError(
                f"{path} was fine-tuned with {spec}, the config now says "
                f"{self.mode.fingerprint()}: give the changed mode another finetuning.name, or "
                "re-fine-tune with overwrite=true"
            )

    def load(self, task: str) -> StateDict:
        """One task's fine-tuned encoder weights, checked as :meth:`checkpoint`."""
        path = self.checkpoint(task)
        state = load_state_dict(path)
        check_compatible(state, self.pretrained, str(path))
        for key, value in state.items():
            check_finite(value, key, path)
        return state

    def task_vector(self, task: str) -> TaskVector:
        """One task's vector, read lazily (one tensor at a time) from its checked checkpoint."""
        return TaskVector.lazy(self.pretrained, self.checkpoint(task), mode=self.finetuning)

    def task_vectors(self, tasks: Sequence[str]) -> dict[str, TaskVector]:
        """Lazy task vectors of ``tasks``: every checkpoint is checked now, read on use, so
        memory does not grow with the number of tasks."""
        return {task: self.task_vector(task) for task in tasks}

    def _checksum(self, task: str) -> str | None:
        """The checksum the task's checkpoint header records (None: absent or not recorded)."""
        path = self.path(task)
        return read_metadata(path).get(CHECKSUM_KEY) if path.is_file() else None

    def _read_metrics(self, task: str) -> dict[str, Any]:
        """The task's metrics file for these pretrained weights and this very checkpoint ({}
        if absent, stale or unreadable: the accuracies are then measured again)."""
        path = self.layout.metrics(task)
        if not path.is_file():
            return {}
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, OSError) as exc:
            log.warning("%s is unreadable (%s): the fine-tuned accuracies are measured again",
                        path, exc)  # fmt: skip
            path.unlink(missing_ok=True)  # discarded: measured and written again
            return {}
        if record.get("pretrained_fingerprint") != self.fingerprint:
            return {}
        if record.get("checkpoint_sha256") != self._checksum(task):
            return {}  # measured on another checkpoint of this task
        if "forwards" not in record and "val_top1" in record:  # written before forwards existed
            flat = {k: record.pop(k) for k in ("val_top1", "test_top1")}
            record["forwards"] = {self.mode.forward: flat}
        return record

    def metrics(self, task: str, forward: str | None = None) -> dict[str, float] | None:
        """The stored fine-tuned ``val_top1`` / ``test_top1`` of one task through ``forward``
        (default: the mode's own), if measured for these pretrained weights."""
        forwards = self._read_metrics(task).get("forwards", {})
        return forwards.get(forward or self.mode.forward)

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
            "finetuning_spec": self.mode.fingerprint(),
            "forward": self.mode.forward,
            "format": CHECKPOINT_FORMAT,
        }
        save_state_dict(state, path, metadata)
        return path

    def write_metrics(
        self,
        task: str,
        accuracies: Mapping[str, float],
        forward: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Store one task's fine-tuned ``val_top1`` / ``test_top1`` through ``forward`` (default:
        the mode's own) next to the ones of other forwards, atomically; ``extra`` (e.g.
        training statistics) is kept at the top level."""
        record = self._read_metrics(task)
        record.setdefault("forwards", {})[forward or self.mode.forward] = dict(accuracies)
        record.update(extra or {})
        record["pretrained_fingerprint"] = self.fingerprint
        record["checkpoint_sha256"] = self._checksum(task)
        write_json(record, self.layout.metrics(task))
