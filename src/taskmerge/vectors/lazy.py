"""Task vectors read lazily from safetensors checkpoints, one tensor at a time.

A :class:`LazyTaskVector` is a ``Mapping[str, Tensor]`` whose ``vector[key]`` reads ONE tensor,
``finetuned[key] - pretrained[key]``, from the checkpoint file(s), so a merge over many tasks
holds only the tensors it is working on (memory is bounded by design). Every read opens the file
with ``safetensors.safe_open`` and closes it again: a handle kept open would keep the pages it
touched mapped, so resident memory would grow with every tensor read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from taskmerge.errors import CheckpointError
from taskmerge.io.checks import check_finite, check_shapes
from taskmerge.io.tensors import (
    float_keys,
    prefetch,
    read_tensor,
    tensor_byte_ranges,
    tensor_shapes,
)

Pretrained = Mapping[str, torch.Tensor] | str | Path


class LazyTaskVector(Mapping[str, torch.Tensor]):
    """``finetuned - pretrained`` over the floating-point tensors of the pretrained weights,
    computed one tensor per lookup (as ``float32``, like :meth:`TaskVector.from_state_dicts`).

    Args:
        finetuned: A safetensors state dict of the fine-tuned model.
        pretrained: The pretrained state dict in memory, or its safetensors file (then read
            lazily too).

    Raises:
        CheckpointError: A file is missing or the keys / shapes differ (checked from the headers,
            before any tensor is read).
    """

    def __init__(self, finetuned: str | Path, pretrained: Pretrained) -> None:
        self.path = Path(finetuned).expanduser()
        for path in (self.path, pretrained):
            if isinstance(path, (str, Path)) and not Path(path).expanduser().is_file():
                raise CheckpointError(f"checkpoint not found: {path}")
        if isinstance(pretrained, (str, Path)):
            self.pretrained_path: Path | None = Path(pretrained).expanduser()
            self._pretrained: Mapping[str, torch.Tensor] | None = None
            reference = tensor_shapes(self.pretrained_path)
            keys = float_keys(self.pretrained_path)
        else:
            self.pretrained_path, self._pretrained = None, pretrained
            reference = {key: tuple(value.shape) for key, value in pretrained.items()}
            keys = [key for key, value in pretrained.items() if value.is_floating_point()]
        check_shapes(tensor_shapes(self.path), reference, str(self.path))
        self._keys = keys
        self._key_set = frozenset(keys)
        self._shapes = {key: torch.Size(reference[key]) for key in keys}
        self._ranges: dict[Path, dict[str, tuple[int, int]]] | None = None

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._key_set:
            raise KeyError(key)
        tuned = read_tensor(self.path, key)
        if self._pretrained is not None:
            base = self._pretrained[key]
        else:
            base = read_tensor(self.pretrained_path, key)  # type: ignore[arg-type]
        check_finite(tuned, key, self.path)
        return tuned.detach().float() - base.detach().float()

    def prefetch(self, key: str) -> None:
        """Start reading one tensor's bytes from the file(s) into the OS page cache, so that
        the lookup of ``key`` a little later does not wait on the disk
        (:func:`taskmerge.io.tensors.prefetch`)."""
        if key not in self._key_set:
            return
        if self._ranges is None:
            files = [self.path] + ([self.pretrained_path] if self.pretrained_path else [])
            self._ranges = {path: tensor_byte_ranges(path) for path in files}
        for path, ranges in self._ranges.items():
            if key in ranges:
                prefetch(path, [ranges[key]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def shape(self, key: str) -> torch.Size:
        """The shape of one tensor, without reading it."""
        return self._shapes[key]

    def __repr__(self) -> str:
        return f"LazyTaskVector({str(self.path)!r}, {len(self)} tensors)"
