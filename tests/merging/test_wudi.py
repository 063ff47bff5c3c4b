"""WUDI-merging (arXiv:2503.08099): the streamed gradient equals autograd of the paper's loss,
the steps equal a float64 autograd rewrite on the stacked tasks, reruns are bit-identical."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.build import build_method
from taskmerge.merging.wudi import WUDIMerging, wudi_loss, wudi_matrix, wudi_statistics
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.checkpoints import random_state

pytestmark = pytest.mark.usefixtures("one_thread")


def matrices(count: int, shape: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) * 1e-3 for _ in range(count)]


def test_closed_form_gradient_equals_autograd_of_the_loss() -> None:
    taus = [tau.double() for tau in matrices(4, (5, 3))]
    point = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    wudi_loss(point, taus).backward()
    _, gram, cross = wudi_statistics(taus)
    torch.testing.assert_close(2 * (point.detach() @ gram - cross), point.grad, rtol=1e-12, atol=0)


def paper_wudi(taus: list[torch.Tensor], iter_num: int) -> torch.Tensor:
    """The paper's optimisation as written: Adam(lr 1e-5) from the sum, autograd through the
    stacked tasks' loss sum_t ||(tau - tau_t) tau_t^T||^2 / ||tau_t||^2, float64."""
    stack = torch.stack([tau.double() for tau in taus])
    merged = torch.nn.Parameter(stack.sum(0))
    norms = stack.flatten(1).norm(dim=1).square()
    optimizer = torch.optim.Adam([merged], lr=1e-5, weight_decay=0)
    for _ in range(iter_num):
        product = (merged.unsqueeze(0) - stack) @ stack.transpose(1, 2)
        loss = (product.square() / norms[:, None, None]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return merged.detach()


@pytest.mark.parametrize("shape", [(6, 4), (3, 7)])
def test_wudi_matrix_equals_the_autograd_rewrite(shape: tuple[int, int]) -> None:
    taus = matrices(3, shape, seed=sum(shape))
    expected = paper_wudi(taus, 200)
    got = wudi_matrix(iter(taus), iter_num=200)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-8)
    assert (expected - sum(t.double() for t in taus)).abs().max() > 1e-4  # the steps moved it


def test_wudi_merge_reruns_bit_identical_records_its_seed_and_means_other_tensors() -> None:
    tvs = {
        f"T{i}": TaskVector(
            {k: v for k, v in random_state(i + 1, 0.01).items() if v.is_floating_point()}
        )
        for i in range(3)
    }
    before = {task: {k: v.clone() for k, v in tv.vector.items()} for task, tv in tvs.items()}
    method = build_method("wudi", {"iter_num": 30, "seed": 7, "device": "cpu"})
    first = method.merge(tvs).vector
    second = build_method("wudi", {"iter_num": 30, "seed": 7, "device": "cpu"}).merge(tvs).vector
    for name in first:
        assert torch.equal(first[name], second[name])
    assert method.details()["wudi"] == {"seed": 7, "iter_num": 30, "lr": 1e-5, "device": "cpu"}
    for name in ("blocks.0.bias", "conv1.weight", "class_embedding"):  # not 2-D: the mean
        torch.testing.assert_close(first[name], sum(tv.vector[name] for tv in tvs.values()) / 3)
    excluded = WUDIMerging(iter_num=30, exclude_keys=["blocks.0.attn.weight"], device="cpu")
    mean = sum(tv.vector["blocks.0.attn.weight"] for tv in tvs.values()) / 3
    torch.testing.assert_close(excluded.merge(tvs).vector["blocks.0.attn.weight"], mean)
    zero = WUDIMerging(iter_num=0, device="cpu").merge(tvs).vector["blocks.0.mlp.weight"]
    torch.testing.assert_close(zero, sum(tv.vector["blocks.0.mlp.weight"] for tv in tvs.values()))
    for task, tv in tvs.items():
        for name, value in tv.vector.items():
            assert torch.equal(value, before[task][name])


def test_wudi_bad_options_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="iter_num"):
        WUDIMerging(iter_num=-1)
    with pytest.raises(ConfigError, match="iter_num"):
        build_method("wudi", {"iter_num": 1.5})
    with pytest.raises(ConfigError, match="device"):
        WUDIMerging(device="gpu0").merge({"A": TaskVector({"w": torch.ones(2, 2)})})
