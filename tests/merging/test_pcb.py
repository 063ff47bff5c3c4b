"""PCB-merging (arXiv:2410.02396): a dense float64 reference written from the paper's steps as
the authors' ``pcb-merging.py`` states them (sort each task's flattened vector), the exact
streaming order statistics, no mutation."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.pcb import PCBMerging, pcb_merge, select_ranks
from taskmerge.vectors.task_vector import TaskVector

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {"w": (12, 9), "b": (30,), "c": (2, 3, 5)}


def vectors(count: int, dtype: torch.dtype, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {n: torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for n, s in SHAPES.items()}
        for _ in range(count)
    ]


def reference(vecs: list[dict], pcb_ratio: float, clamp_ratio: float) -> dict:
    """PCB on the T x d matrix, in float64: clamp, intra, inter, drop, rescale."""
    names = list(vecs[0])
    x = torch.stack([torch.cat([v[n].double().reshape(-1) for n in names]) for v in vecs])
    n, d = x.shape
    ordered = x.abs().sort(dim=1).values
    lo = ordered[:, int(d * clamp_ratio)].unsqueeze(1)
    hi = ordered[:, int(d * (1 - clamp_ratio) - 1)].unsqueeze(1)
    a = torch.maximum(torch.minimum(x.abs(), hi), lo)
    clamped = torch.sign(x) * a
    intra = torch.exp(n * ((a - lo) / (hi - lo)) ** 2)
    inter = torch.tanh(x * x.sum(0))
    score = intra * inter
    sorted_score = score.sort(dim=1).values
    low = sorted_score[:, int(d * (1 - pcb_ratio))].unsqueeze(1)
    high = sorted_score[:, d - 1].unsqueeze(1)
    weight = (torch.maximum(torch.minimum(score, high), low) - low) / (high - low)
    merged = (clamped * weight).sum(0) / weight.sum(0).clamp(min=1e-12)
    out, offset = {}, 0
    for name in names:
        size = vecs[0][name].numel()
        out[name] = merged[offset : offset + size].view(vecs[0][name].shape)
        offset += size
    return out


@pytest.mark.parametrize(("pcb_ratio", "clamp_ratio", "count"), [(0.1, 1e-4, 3), (0.3, 0.02, 5)])
def test_pcb_equals_the_dense_float64_reference(
    pcb_ratio: float, clamp_ratio: float, count: int
) -> None:
    vecs = vectors(count, torch.float64)
    copies = [{n: t.clone() for n, t in v.items()} for v in vecs]
    merged = pcb_merge(vecs, pcb_ratio, clamp_ratio)
    expected = reference(vecs, pcb_ratio, clamp_ratio)
    for name in SHAPES:
        assert torch.allclose(merged[name], expected[name], atol=1e-12, rtol=1e-12), name
    for v, c in zip(vecs, copies, strict=True):
        assert all(torch.equal(v[n], c[n]) for n in v)
    # float32 task vectors (the lazy checkpoints): float32 rounding of the same answer
    single = [{n: t.float() for n, t in v.items()} for v in vecs]
    method = PCBMerging(pcb_ratio=pcb_ratio, clamp_ratio=clamp_ratio, grid=[1.0])
    merged32 = method.merge({f"t{i}": TaskVector(v) for i, v in enumerate(single)}).vector
    for name in SHAPES:
        assert merged32[name].dtype == torch.float32
        assert torch.allclose(merged32[name].double(), expected[name], atol=1e-5, rtol=1e-5)


def test_drop_keeps_the_top_fraction_of_each_task() -> None:
    vecs = vectors(2, torch.float64, seed=3)
    # pcb_ratio = 1: nothing dropped below the minimum score; merged entries are weighted means
    merged = pcb_merge(vecs, 1.0, 0.0)
    expected = reference(vecs, 1.0, 0.0)
    for name in SHAPES:
        assert torch.allclose(merged[name], expected[name], atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_select_ranks_equals_sorting_signed_values(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    tensors = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in (50, 7, 33)]
    tensors[0][:5] = 0.0
    tensors[1][:2] = -0.0
    tensors[2][:4] = tensors[2][4]  # ties
    other = [-t.abs() for t in tensors]  # a second "task": all non-positive

    def stream():  # noqa: ANN202
        for a, b in zip(tensors, other, strict=True):
            yield 0, a
            yield 1, b

    ranks = [[1, 17, 45, 90], [1, 2, 89, 90]]
    found = select_ranks(stream, ranks)
    for task, values in enumerate((tensors, other)):
        ordered = torch.cat([t.reshape(-1) for t in values]).double().sort().values
        assert found[task] == [float(ordered[r - 1]) for r in ranks[task]]


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="method.pcb_ratio"):
        PCBMerging(pcb_ratio=0.0)
    with pytest.raises(ConfigError, match="method.clamp_ratio"):
        PCBMerging(clamp_ratio=0.5)
