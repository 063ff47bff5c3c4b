"""Binary masks on disk: packed bits in a safetensors file, written and read tensor by tensor.

Format: tensor ``"<task>/<parameter>"`` holds the mask's flattened bits packed with
``numpy.packbits`` (big-endian bit order, like the reference's ``np.packbits``) as uint8; the
header metadata holds ``format``, ``tasks`` (JSON list), ``shapes`` (JSON: key -> shape) and any
extra string metadata (e.g. the TALL lambda and how the multi-task vector was built).

The writer knows every entry's byte size from the shapes, so it writes the safetensors header
first and then streams one packed mask at a time (never the T masks at once); the file is moved
into place only when complete. The reader opens the file per lookup (no mapping stays resident).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskmerge.errors import CheckpointError, ConfigError
from taskmerge.io.atomic import atomic_path

MASKS_FORMAT = "taskmerge-packed-masks"
Shape = Sequence[int]


class MaskFileError(CheckpointError, ConfigError):
    """A mask file is missing or does not match the tasks / model / settings asked for."""


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as packed bits (uint8, ``numpy.packbits`` order) of its flattened form."""
    bits = mask.detach().to(torch.bool).reshape(-1).cpu().numpy()
    return torch.from_numpy(np.packbits(bits))


def unpack_mask(packed: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Inverse of :func:`pack_mask`."""
    count = int(np.prod(shape, dtype=np.int64))
    bits = np.unpackbits(packed.cpu().numpy(), count=count)
    return torch.from_numpy(bits.astype(bool)).reshape(tuple(shape))


def _packed_size(shape: Shape) -> int:
    return (int(np.prod(shape, dtype=np.int64)) + 7) // 8


def _header(entries: Sequence[tuple[str, Shape]], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for key, shape in entries:
        size = _packed_size(shape)
        header[key] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data section, as safetensors' own writer does
    return struct.pack("<Q", len(raw)) + raw


@contextmanager
def mask_writer(
    path: str | Path,
    tasks: Sequence[str],
    entries: Sequence[tuple[str, str, Shape]],
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[Callable[[str, str, torch.Tensor], None]]:
    """Write a mask file one mask at a time, atomically.

    Args:
        path: The file to write (replaced only if the block completes).
        tasks: Task names in order (stored in the metadata).
        entries: ``(task, parameter, shape)`` in the exact order the masks will be written.
        metadata: Extra string metadata.

    Yields:
        ``write(task, parameter, mask)``, to be called once per entry, in order.
    """
    for task in tasks:
        if "/" in task:
            raise ValueError(f"task name {task!r} must not contain '/'")
    keyed = [(f"{task}/{name}", tuple(int(d) for d in shape)) for task, name, shape in entries]
    meta = {str(key): str(value) for key, value in (metadata or {}).items()}
    meta.update(
        format=MASKS_FORMAT,
        tasks=json.dumps(list(tasks)),
        shapes=json.dumps({key: list(shape) for key, shape in keyed}),
    )
    pending = iter(keyed)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        handle.write(_header(keyed, meta))

        def write(task: str, name: str, mask: torch.Tensor) -> None:
            key, shape = next(pending, (None, None))
            if key != f"{task}/{name}" or tuple(mask.shape) != shape:
                raise ValueError(
                    f"mask {task}/{name} {tuple(mask.shape)} written out of order (expected "
                    f"{key} {shape})"
                )
            handle.write(pack_mask(mask).numpy().tobytes())

        yield write
        left = next(pending, None)
        if left is not None:
            raise ValueError(f"mask file {path} left incomplete: {left[0]} was never written")


def save_masks(
    path: str | Path,
    masks: Mapping[str, Mapping[str, torch.Tensor]],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write per-task masks (task -> parameter -> bool tensor) as packed bits, atomically."""
    entries = [
        (task, name, tuple(m.shape)) for task, mask in masks.items() for name, m in mask.items()
    ]
    with mask_writer(path, list(masks), entries, metadata) as write:
        for task, mask in masks.items():
            for name, value in mask.items():
                write(task, name, value)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header and the offset where its data starts."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > 100_000_000:
            raise ValueError("header too large")
        header = json.loads(handle.read(size))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header, 8 + size


class MaskFile:
    """A mask file opened for lazy reads: :meth:`get` unpacks one task's mask of one parameter.

    Args:
        path: The file written by :func:`mask_writer` / :func:`save_masks`.
        tasks: The tasks the caller needs (checked to be in the file).
        shapes: Parameter -> shape the caller expects (checked for every task in ``tasks``).
        exact_tasks: Require the file's task list to equal ``tasks`` (same order).
        expected: Metadata values the file must carry (e.g. the lambda it was built with).
        fix: How to fix a missing or mismatching file, appended to the error.

    Raises:
        MaskFileError: Missing file, not a mask file, or other tasks / shapes / metadata.
    """

    def __init__(
        self,
        path: str | Path,
        tasks: Sequence[str] | None = None,
        shapes: Mapping[str, Shape] | None = None,
        exact_tasks: bool = False,
        expected: Mapping[str, Any] | None = None,
        fix: str = "rebuild the masks",
    ) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise MaskFileError(f"mask file {self.path} does not exist: {fix}")
        try:
            header, self._data_start = _read_header(self.path)
        except (OSError, ValueError, struct.error) as exc:
            raise MaskFileError(f"{self.path} is not a readable safetensors file: {fix}") from exc
        meta = header.pop("__metadata__", None) or {}
        self._offsets = {key: tuple(entry["data_offsets"]) for key, entry in header.items()}
        if meta.get("format") != MASKS_FORMAT:
            raise MaskFileError(f"{self.path} is not a mask file written by taskmerge: {fix}")
        self.metadata = meta
        self.tasks: list[str] = json.loads(meta["tasks"])
        self.shapes: dict[str, tuple[int, ...]] = {
            key: tuple(shape) for key, shape in json.loads(meta["shapes"]).items()
        }
        self._check(list(tasks or []), shapes or {}, exact_tasks, expected or {}, fix)

    def _check(
        self,
        tasks: list[str],
        shapes: Mapping[str, Shape],
        exact_tasks: bool,
        expected: Mapping[str, Any],
        fix: str,
    ) -> None:
        where = f"mask file {self.path}"
        if exact_tasks and tasks and self.tasks != tasks:
            raise MaskFileError(f"{where} holds masks for tasks {self.tasks}, not {tasks}: {fix}")
        missing = [task for task in tasks if task not in self.tasks]
        if missing:
            raise MaskFileError(f"{where} has no masks for tasks {missing}: {fix}")
        for key, value in expected.items():
            if self.metadata.get(key) != str(value):
                raise MaskFileError(
                    f"{where} was built with {key}={self.metadata.get(key)}, not {value}: {fix}"
                )
        for task in tasks:
            for name, shape in shapes.items():
                stored = self.shapes.get(f"{task}/{name}")
                if stored != tuple(shape):
                    found = "no mask" if stored is None else f"shape {stored}"
                    raise MaskFileError(
                        f"{where} has {found} for {task}/{name}, the task vector has shape "
                        f"{tuple(shape)}: {fix}"
                    )

    def get(self, task: str, name: str) -> torch.Tensor:
        """The boolean mask of ``task`` for parameter ``name`` (read from disk now)."""
        key = f"{task}/{name}"
        begin, end = self._offsets[key]
        with open(self.path, "rb") as handle:  # a plain read: nothing stays mapped
            handle.seek(self._data_start + begin)
            raw = handle.read(end - begin)
        if len(raw) != end - begin:
            raise MaskFileError(f"mask file {self.path} is truncated at {key}: rebuild the masks")
        return unpack_mask(
            torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()), self.shapes[key]
        )


def load_masks(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read a whole mask file (task -> parameter -> bool tensor); :class:`MaskFile` reads lazily."""
    masks_file = MaskFile(path, fix="build the TALL masks first (method=tall_mask)")
    masks: dict[str, dict[str, torch.Tensor]] = {task: {} for task in masks_file.tasks}
    for key in masks_file.shapes:
        task, name = key.split("/", 1)
        masks[task][name] = masks_file.get(task, name)
    return masks
