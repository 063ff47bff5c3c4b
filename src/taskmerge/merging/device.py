"""Merging on the accelerator (``merge_device=auto|cpu|cuda``).

The merge methods loop over parameters and stream over the tasks, reading ``vector[name]`` one
tensor at a time (:mod:`taskmerge.merging.tensorwise`). :func:`on_merge_device` wraps the task
vectors so that every read lands on the merge device: each parameter's tensors are copied to the
GPU as they are read and dropped after it, so the SVD methods (float64 Gram eigendecompositions
and polar factors on the GPU, :mod:`taskmerge.merging.svd_routes`), TIES' exact top-k
(:mod:`taskmerge.merging.streaming`, the same integer bit histograms) and the masks run there.
Host memory stays the CPU path's (one tensor read at a time; the merged vector accumulates on
the GPU), and the merged tensors come back to the host tensor by tensor when they are applied to
the pretrained weights (:func:`taskmerge.vectors.task_vector.apply_delta`). ``cpu`` is the CPU
path unchanged (no wrapper); ``auto`` is ``cuda`` where a CUDA device is visible.

The data-using methods (AdaMerging, RegMean, Fisher) keep their own ``method.device``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from taskmerge.errors import ConfigError
from taskmerge.hardware import check_device
from taskmerge.merging.tensorwise import VectorView
from taskmerge.vectors.task_vector import TaskVector


def resolve_merge_device(setting: str) -> torch.device:
    """The device ``merge_device`` names (``auto``: CUDA when visible, else the CPU).

    Raises:
        ConfigError: not auto, cpu or cuda[:index], or a CUDA device this machine lacks.
    """
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting != "cpu" and not str(setting).startswith("cuda"):
        raise ConfigError(
            f"merge_device={setting!r} is not a merge device: use auto, cpu or cuda[:<index>]"
        )
    try:
        return torch.device(check_device(str(setting)))
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("device=", "merge_device=", 1)) from None


class OnDevice(VectorView):
    """A task vector whose every read is copied to ``device`` (one tensor at a time)."""

    def __init__(self, vector: Mapping[str, torch.Tensor], device: torch.device) -> None:
        super().__init__(vector)
        self.device = device

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._vector[name].to(self.device)


def on_merge_device(
    task_vectors: Mapping[str, TaskVector], device: torch.device
) -> Mapping[str, TaskVector]:
    """The task vectors read onto ``device``; the same mapping when it is the CPU."""
    if device.type == "cpu":
        return task_vectors
    return {
        task: TaskVector(OnDevice(tv.vector, device), mode=tv.mode)
        for task, tv in task_vectors.items()
    }
