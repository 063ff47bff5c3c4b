"""What the machine decides: the device, the loader workers and the evaluation precision.

* ``device: auto`` is CUDA when available, else the CPU.
* ``num_workers: auto`` sizes the loader workers to the CPUs this process may use: one fewer
  than them (the main process runs the model), at most 8, none on a single core.
* ``eval_precision`` is the arithmetic of evaluation forwards (every sweep point, the
  fine-tuned and zero-shot accuracies):

  - ``fp32`` (default): exact float32; the results every test and table of this project use.
  - ``tf32``: CUDA matrix products and convolutions in TensorFloat-32 (10-bit mantissa inputs,
    float32 accumulation; Ampere and later). No effect on a CPU.
  - ``bf16``: ``torch.autocast`` to bfloat16 on the evaluation device (CUDA, or CPUs with
    bf16 units), the fastest on recent GPUs.

  Accuracies measured at another precision are cached under their own key
  (``<forward>+<precision>``): they are never mixed with float32 ones. A sweep compares
  candidates that differ by fractions of a point, so use ``tf32`` / ``bf16`` for exploration
  and confirm the chosen model in ``fp32`` when the difference matters.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from taskmerge.errors import ConfigError

PRECISIONS = ("fp32", "tf32", "bf16")
MAX_AUTO_WORKERS = 8


#: ``device=`` values: ``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``, ``mps``.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """``device`` if it names a device this machine has.

    Raises:
        ConfigError: an unknown name (e.g. ``gpu0``), or a GPU this machine does not have.
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise ConfigError(
            f"device={device!r} is not a device: use auto, cpu, cuda, cuda:<index> or mps"
        )
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(
                f"device={device}: this machine has {have} visible: use device=cpu or "
                "device=auto (CUDA when present), or check CUDA_VISIBLE_DEVICES"
            )
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("device=mps: this machine has no MPS device: use device=cpu or auto")
    return device


def resolve_device(device: str) -> str:
    """The device to run on (``auto``: CUDA when available, else CPU), checked to exist.

    Raises:
        ConfigError: see :func:`check_device`.
    """
    if check_device(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_workers(value: int | str) -> int:
    """Loader workers: a count >= 0, or ``auto`` (see the module docstring).

    Raises:
        ConfigError: neither ``auto`` nor a non-negative integer.
    """
    if value == "auto":
        return max(0, min(MAX_AUTO_WORKERS, usable_cpus() - 1))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or str(value).strip() != str(workers):
        raise ConfigError(f"num_workers={value}: use a whole number >= 0, or auto")
    return workers


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        ConfigError: any other value.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"eval_precision={precision}: choose one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def evaluation_precision(precision: str, device: str | torch.device) -> Iterator[None]:
    """Run the block's forwards at ``precision`` on ``device`` (see the module docstring)."""
    kind = torch.device(device).type
    if precision == "bf16":
        with torch.autocast(device_type=kind, dtype=torch.bfloat16):
            yield
    elif precision == "tf32" and kind == "cuda":
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    else:
        yield
