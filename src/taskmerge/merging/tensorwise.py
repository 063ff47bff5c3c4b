"""Tensor-by-tensor building blocks shared by the merge methods (bounded memory).

A "vector" is a mapping from parameter name to tensor: a dict in memory or a lazy mapping that
reads one tensor per lookup (:class:`taskmerge.vectors.lazy.LazyTaskVector`). Every method
loops over parameter names and, inside, streams over the tasks, reading ``vector[name]`` once per
use and dropping it before the next task: the working set is one parameter tensor times a small
constant, whatever the number of tasks. In-memory and lazy vectors run the same code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from taskmerge.vectors.task_vector import apply_delta

Vector = Mapping[str, torch.Tensor]


def parameter_names(vectors: Sequence[Vector]) -> list[str]:
    """The parameter names of the first vector, after checking every vector has the same set."""
    if not vectors:
        raise ValueError("no task vectors to merge")
    names = list(vectors[0])
    expected = set(names)
    for index, vector in enumerate(vectors[1:], start=1):
        if set(vector) != expected:
            diff = sorted(expected.symmetric_difference(vector))
            raise ValueError(f"task vector {index} has other parameter names (e.g. {diff[:3]})")
    return names


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Tensors freed between parameters leave holes in the heap that glibc keeps mapped; over many
    tasks that would grow resident memory although the live set stays one tensor.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def each_parameter(names: Iterable[str], prefetch_from: Sequence[Vector] = ()) -> Iterator[str]:
    """The names in order, releasing freed memory after each parameter is processed; with
    ``prefetch_from``, the next parameter's tensors of those vectors are prefetched from disk
    (:func:`prefetch`) before each name is handed out."""
    names = list(names)
    for index, name in enumerate(names):
        if prefetch_from and index + 1 < len(names):
            prefetch(prefetch_from, names[index + 1])
        yield name
        release_memory()


def each_parameter_of(vectors: Sequence[Vector]) -> Iterator[str]:
    """:func:`each_parameter` over the vectors' parameter names, prefetching one ahead."""
    return each_parameter(parameter_names(vectors), prefetch_from=vectors)


def prefetch(vectors: Sequence[Vector], name: str) -> None:
    """Ask each vector that reads from disk (it has a ``prefetch`` method) to start reading
    ``name``; in-memory vectors are skipped."""
    for vector in vectors:
        ahead = getattr(vector, "prefetch", None)
        if callable(ahead):
            ahead(name)


def column(vectors: Sequence[Vector], name: str) -> Iterator[torch.Tensor]:
    """``vector[name]`` for each task in turn, read one at a time."""
    for vector in vectors:
        yield vector[name]


class VectorView(Mapping[str, torch.Tensor]):
    """A task vector seen through a per-tensor transform: the names, count and shapes are the
    wrapped vector's; subclasses give ``__getitem__`` (one tensor computed per lookup)."""

    def __init__(self, vector: Vector) -> None:
        self._vector = vector

    def __getitem__(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter(self._vector)

    def __len__(self) -> int:
        return len(self._vector)

    def __contains__(self, name: object) -> bool:
        return name in self._vector

    def shape(self, name: str) -> torch.Size:
        """A tensor's shape, without reading it where the wrapped vector can tell."""
        return shape_of(self._vector, name)

    def prefetch(self, name: str) -> None:
        """Passed on to the wrapped vector (:func:`prefetch`)."""
        prefetch([self._vector], name)


def shape_of(vector: Vector, name: str) -> torch.Size:
    """One tensor's shape; lazy vectors answer from the checkpoint header without reading it."""
    shape = getattr(vector, "shape", None)
    if callable(shape):
        return torch.Size(shape(name))
    return vector[name].shape


def running_sum(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """``t_0 + t_1 + ...`` in order, accumulated in place in one buffer (never stacked)."""
    total: torch.Tensor | None = None
    for tensor in tensors:
        total = tensor.clone() if total is None else total.add_(tensor)
    if total is None:
        raise ValueError("running_sum of no tensors")
    return total


class DerivedStateDict(Mapping[str, torch.Tensor]):
    """A state dict computed one tensor per lookup: ``pretrained[k] + coef * delta(k)``.

    Used for methods whose result is one model per task (TALL masks, magnitude masking, TSV-C):
    a candidate holds T of these without T copies of the weights; ``dict(it)`` or
    ``module.load_state_dict(it)`` materialises one model when it is evaluated.

    Args:
        pretrained: The pretrained state dict (in memory).
        delta: Parameter name -> the tensor to add (None: the name is not merged).
        scaling_coef: The coefficient of ``delta``.
    """

    def __init__(
        self,
        pretrained: Mapping[str, torch.Tensor],
        delta: Callable[[str], torch.Tensor | None],
        scaling_coef: float = 1.0,
    ) -> None:
        self._pretrained, self._delta, self._coef = pretrained, delta, scaling_coef

    def __getitem__(self, key: str) -> torch.Tensor:
        return apply_delta(self._pretrained[key], self._delta(key), self._coef)

    def __iter__(self) -> Iterator[str]:
        return iter(self._pretrained)

    def __len__(self) -> int:
        return len(self._pretrained)

    def __contains__(self, key: object) -> bool:
        return key in self._pretrained

    def materialize(self) -> dict[str, torch.Tensor]:
        """The state dict as a plain dict."""
        return {key: self[key] for key in self}
