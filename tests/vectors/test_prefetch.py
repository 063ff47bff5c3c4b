"""Prefetching the next parameter of lazy task vectors: the byte ranges read from the header
are each tensor's data, and the streaming loop asks for the next name before handing out the
current one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from taskmerge.io.tensors import prefetch, tensor_byte_ranges
from taskmerge.merging.tensorwise import VectorView, each_parameter_of
from taskmerge.vectors.lazy import LazyTaskVector

STATE = {
    "a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
    "b.bias": torch.tensor([1.5, -2.0], dtype=torch.float64),
    "c.weight": torch.ones(2, 2, dtype=torch.float16),
}


def test_byte_ranges_are_the_tensors_data(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(STATE, str(path), metadata={"format": "pt"})
    raw = path.read_bytes()
    ranges = tensor_byte_ranges(path)
    assert set(ranges) == set(STATE)
    for key, tensor in STATE.items():
        offset, length = ranges[key]
        assert raw[offset : offset + length] == tensor.numpy().tobytes()
    prefetch(path, list(ranges.values()))  # returns at once, changes nothing
    prefetch(tmp_path / "missing.safetensors", [(0, 8)])  # a no-op, no error
    assert path.read_bytes() == raw


class Recording(VectorView):
    """A view recording the prefetches it passes on."""

    def __init__(self, vector, seen: list[str]) -> None:  # noqa: ANN001
        super().__init__(vector)
        self.seen = seen

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._vector[name]

    def prefetch(self, name: str) -> None:
        self.seen.append(name)
        super().prefetch(name)


def test_the_loop_prefetches_the_next_parameter(tmp_path: Path) -> None:
    base = {k: torch.zeros_like(v) for k, v in STATE.items()}
    save_file(STATE, str(tmp_path / "ft.safetensors"))
    lazy = LazyTaskVector(tmp_path / "ft.safetensors", base)
    seen: list[str] = []
    order = []
    vectors = [Recording(lazy, seen), {k: v.float() for k, v in STATE.items()}]  # one in memory
    for name in each_parameter_of(vectors):
        order.append((name, list(seen)))
        assert np.allclose(vectors[0][name].numpy(), STATE[name].float().numpy())
    names = list(STATE)
    # before each name is handed out, the next one has been asked for
    assert order == [(names[0], names[1:2]), (names[1], names[1:3]), (names[2], names[1:3])]
    lazy.prefetch("not.a.key")  # ignored
