"""MagMax (arXiv:2407.06322): a float64 dense reference (argmax of |tau| over the task stack,
the last maximal task on ties, as danielm1405/magmax's ``>=`` fold), hand cases, no mutation."""

from __future__ import annotations

import pytest
import torch

from taskmerge.merging.magmax import MagMax, magmax_merge
from taskmerge.vectors.task_vector import TaskVector

pytestmark = pytest.mark.usefixtures("one_thread")


def reference(vecs: list[dict]) -> dict:
    out = {}
    for name in vecs[0]:
        stack = torch.stack([v[name].double() for v in vecs])
        magnitude = stack.abs()
        # the LAST task reaching the maximum: argmax over the reversed stack
        last = stack.shape[0] - 1 - magnitude.flip(0).argmax(0)
        out[name] = stack.gather(0, last.unsqueeze(0)).squeeze(0)
    return out


def test_magmax_equals_the_dense_float64_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    vecs = [
        {"w": torch.randn(6, 5, generator=gen, dtype=torch.float64), "b": torch.randn(4)}
        for _ in range(5)
    ]
    vecs[3]["w"][0, :2] = vecs[1]["w"][0, :2]  # exact ties between tasks
    copies = [{n: t.clone() for n, t in v.items()} for v in vecs]
    merged = magmax_merge(vecs)
    for name, expected in reference(vecs).items():
        assert torch.equal(merged[name].double(), expected), name
    for v, c in zip(vecs, copies, strict=True):  # inputs untouched
        assert all(torch.equal(v[n], c[n]) for n in v)


def test_hand_case_ties_go_to_the_later_task() -> None:
    a = {"x": torch.tensor([0.5, -2.0, 0.0, 1.0])}
    b = {"x": torch.tensor([-0.5, 1.0, 0.0, -3.0])}
    merged = MagMax(scaling_coef=0.5).merge({"a": TaskVector(a), "b": TaskVector(b)})
    assert torch.equal(merged.vector["x"], torch.tensor([-0.5, -2.0, 0.0, -3.0]))
    # one task: itself
    assert torch.equal(magmax_merge([a])["x"], a["x"])
