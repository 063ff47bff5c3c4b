"""DARE (arXiv:2311.03099): float64 dense references written from the paper and the documented
mask seed convention, determinism, independence of the reading order, FusionBench's options."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from taskmerge.errors import ConfigError
from taskmerge.merging.dare import (
    DareTaskArithmetic,
    DareTies,
    DroppedVector,
    dare_sum,
    dare_ties,
    linear_weight_names,
)
from taskmerge.vectors.task_vector import TaskVector

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {"a.weight": (7, 5), "b.bias": (9,), "c": (3, 2, 4)}


def vectors(count: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {n: torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for n, s in SHAPES.items()}
        for _ in range(count)
    ]


def reference_mask(shape: tuple, p: float, seed: int, task: str, name: str) -> torch.Tensor:
    """The convention as documented, written out again."""
    text = f"{seed}/{task}/{name}".encode()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1)
    return torch.rand(shape, generator=generator, dtype=torch.float32) > p


def reference_dropped(vecs: list[dict], p: float, seed: int, tasks: list | None = None) -> list:
    tasks = tasks or [str(i) for i in range(len(vecs))]
    return [
        {
            n: v[n].double() * reference_mask(v[n].shape, p, seed, task, n).double() / (1 - p)
            for n in v
        }
        for task, v in zip(tasks, vecs, strict=True)
    ]


def reference_ties(vecs: list[dict], k: float, agg: str) -> dict:
    """Dense TIES on the flattened T x P matrix (prateeky2806/ties-merging's recipe)."""
    names = list(vecs[0])
    flat = torch.stack([torch.cat([v[n].double().reshape(-1) for n in names]) for v in vecs])
    d = flat.shape[1]
    if k < 100:  # the reference skips the trim at k=100
        kth = flat.abs().kthvalue(d - int(d * k / 100), dim=1, keepdim=True).values
        trimmed = flat * (flat.abs() >= kth)
    else:
        trimmed = flat
    sign = torch.sign(trimmed.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    keep = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    selected = trimmed * keep
    merged = selected.sum(0)
    if agg == "mean":
        merged = merged / (selected != 0).sum(0).clamp(min=1)
    out, offset = {}, 0
    for n in names:
        size = vecs[0][n].numel()
        out[n] = merged[offset : offset + size].view(vecs[0][n].shape)
        offset += size
    return out


def close(a: dict, b: dict, tol: float = 1e-12) -> None:
    assert list(a) == list(b)
    for n in a:
        assert torch.allclose(a[n].double(), b[n].double(), atol=tol, rtol=tol), n


def test_dare_sum_equals_the_dense_float64_reference() -> None:
    vecs = vectors(3)
    expected = reference_dropped(vecs, 0.3, 7)
    summed = {n: sum(e[n] for e in expected) for n in SHAPES}
    close(dare_sum(vecs, 0.3, True, 7), summed)
    # no rescale: the kept entries keep their values
    plain = dare_sum(vecs, 0.3, False, 7)
    close(plain, {n: summed[n] * 0.7 for n in SHAPES})


@pytest.mark.parametrize(("k", "agg"), [(20, "sum"), (50, "mean"), (100, "sum")])
def test_dare_ties_equals_dense_ties_of_the_dropped_vectors(k: float, agg: str) -> None:
    vecs = vectors(4, seed=1)
    expected = reference_ties(reference_dropped(vecs, 0.5, 3), k, agg)
    close(dare_ties(vecs, 0.5, True, 3, k, agg), expected)


def test_masks_drop_a_fraction_p_and_keep_the_expectation() -> None:
    big = [{"w": torch.ones(200_000)}]
    dropped = dare_sum(big, 0.9, True, 0)["w"]
    kept = (dropped != 0).double().mean().item()
    assert abs(kept - 0.1) < 0.005
    assert torch.allclose(dropped[dropped != 0], torch.tensor(10.0))
    assert abs(dropped.double().mean().item() - 1.0) < 0.05


def test_bit_identical_on_rerun_other_seed_other_masks_order_free() -> None:
    vecs = vectors(3, dtype=torch.float32)
    first = DareTies(p=0.5, seed=11, grid=[1.0]).merge(
        {f"t{i}": TaskVector(v) for i, v in enumerate(vecs)}
    )
    again = DareTies(p=0.5, seed=11, grid=[1.0]).merge(
        {f"t{i}": TaskVector(v) for i, v in enumerate(vecs)}
    )
    for n in SHAPES:
        assert torch.equal(first.vector[n], again.vector[n])
    other = dare_sum(vecs, 0.5, True, 12)
    assert not torch.equal(other["a.weight"], dare_sum(vecs, 0.5, True, 11)["a.weight"])
    # a mask depends on (seed, task name, name) only: reading order, repeats, reversed dicts
    view = DroppedVector(vecs[1], "t1", 0.5, True, 11)
    reversed_view = DroppedVector(dict(reversed(list(vecs[1].items()))), "t1", 0.5, True, 11)
    for n in reversed(SHAPES):
        assert torch.equal(view[n], view[n]) and torch.equal(view[n], reversed_view[n])
    # ... so neither the task order nor the other tasks change a task's mask
    names = ["MNIST", "Cars", "DTD"]
    merged = DareTaskArithmetic(p=0.5, seed=2).merge(
        {task: TaskVector(v) for task, v in zip(names, vecs, strict=True)}
    )
    shuffled = DareTaskArithmetic(p=0.5, seed=2).merge(
        {task: TaskVector(v) for task, v in reversed(list(zip(names, vecs, strict=True)))}
    )
    expected = reference_dropped(vecs, 0.5, 2, names)
    for n in SHAPES:
        assert torch.allclose(merged.vector[n], shuffled.vector[n], atol=1e-6)
        assert torch.allclose(merged.vector[n].double(), sum(e[n] for e in expected), atol=1e-6)
    alone = dare_sum(vecs[1:2], 0.5, True, 2, tasks=["Cars"])
    assert torch.equal(alone["c"].double(), expected[1]["c"])


def test_inputs_are_not_mutated_and_p_zero_is_task_arithmetic() -> None:
    vecs = vectors(2)
    copies = [{n: t.clone() for n, t in v.items()} for v in vecs]
    dare_sum(vecs, 0.5, True, 0)
    dare_ties(vecs, 0.5, True, 0)
    for v, c in zip(vecs, copies, strict=True):
        assert all(torch.equal(v[n], c[n]) for n in v)
    close(dare_sum(vecs, 0.0, True, 0), {n: vecs[0][n] + vecs[1][n] for n in SHAPES})


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2)
        self.fc = nn.Linear(4, 3)
        self.ln = nn.LayerNorm(3)


def test_only_on_linear_weights_drops_only_linear_module_weights() -> None:
    block = Block()
    names = linear_weight_names(block)
    # FusionBench's isinstance(module, nn.Linear): out_proj and fc, not in_proj_weight
    assert names == {"attn.out_proj.weight", "fc.weight"}
    state = {n: torch.ones_like(t) for n, t in block.state_dict().items()}
    method = DareTaskArithmetic(p=0.5, only_on_linear_weights=True, grid=[1.0])
    with pytest.raises(ConfigError, match="bind"):
        method.merge({"t": TaskVector(state)})
    with pytest.raises(ConfigError, match="needs the model"):
        DareTaskArithmetic(only_on_linear_weights=True).bind(None, ["t"])
    merged = method.bind(block, ["t"]).merge({"t": TaskVector(state)}).vector
    for n, tensor in merged.items():
        if n in names:
            assert set(tensor.unique().tolist()) == {0.0, 2.0}
        else:
            assert torch.equal(tensor, state[n])


def test_options_are_checked_and_the_seed_is_recorded() -> None:
    with pytest.raises(ConfigError, match="method.p=1"):
        DareTaskArithmetic(p=1.0)
    with pytest.raises(ConfigError, match="method.agg"):
        DareTies(agg="max")  # type: ignore[arg-type]
    details = DareTies(seed=5).details()["dare"]
    assert details["seed"] == 5 and details["p"] == 0.5 and "sha256" in details["mask_seed"]
