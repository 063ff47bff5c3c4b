"""Model Breadcrumbs (arXiv:2312.06795): a float64 reference written from the rule (rank the
magnitudes, keep ranks [n_bot, n - n_top)), mergekit's counts, small tensors (n_top = 0)."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.breadcrumbs import Breadcrumbs, breadcrumb_tensor, kept_range
from taskmerge.vectors.task_vector import TaskVector

pytestmark = pytest.mark.usefixtures("one_thread")


def reference(tau: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Each entry's rank among the magnitudes (distinct values), kept when in the band."""
    flat = tau.double().reshape(-1)
    n = flat.numel()
    target, top = int(density * n), int(gamma * n)
    bottom = n - target - top
    if bottom < 0:
        top, bottom = top + bottom, 0
    ranks = flat.abs().argsort().argsort()  # 0 = smallest
    keep = (ranks >= bottom) & (ranks < n - top)
    return (flat * keep).reshape(tau.shape)


@pytest.mark.parametrize(("density", "gamma"), [(0.1, 0.01), (0.5, 0.1), (0.95, 0.1), (1.0, 0.3)])
def test_breadcrumbs_equals_the_float64_reference(density: float, gamma: float) -> None:
    gen = torch.Generator().manual_seed(1)
    vecs = [
        {
            "w": torch.randn(20, 15, generator=gen, dtype=torch.float64),
            "b": torch.randn(150, generator=gen, dtype=torch.float64),
        }
        for _ in range(3)
    ]
    method = Breadcrumbs(density=density, gamma=gamma, grid=[1.0])
    merged = method.merge({f"t{i}": TaskVector(v) for i, v in enumerate(vecs)}).vector
    for name in ("w", "b"):
        expected = sum(reference(v[name], density, gamma) for v in vecs)
        if density >= 1:  # mergekit: density >= 1 leaves the tensor as is
            expected = sum(v[name].double() for v in vecs)
        assert torch.allclose(merged[name].double(), expected, atol=1e-12), name


def test_counts_hand_case_and_small_tensors() -> None:
    assert kept_range(1000, 0.1, 0.01) == (890, 10)
    assert kept_range(100, 0.95, 0.1) == (0, 5)  # fewer outliers removed to keep 95
    tau = torch.tensor([0.1, -5.0, 0.3, -0.2, 2.0, 0.05, -1.0, 0.4, 0.6, -0.7])
    # density 0.3, gamma 0.1: drop the largest (|-5|) and the 6 smallest: keep 2.0, -1.0, -0.7
    expected = torch.tensor([0, 0, 0, 0, 2.0, 0, -1.0, 0, 0, -0.7])
    assert torch.equal(breadcrumb_tensor(tau, 0.3, 0.1), expected)
    # gamma * n < 1: nothing is an outlier (an old mergekit slice zeroed such tensors)
    assert torch.equal(
        breadcrumb_tensor(tau, 0.3, 0.01), torch.where(tau.abs() >= 1.0, tau, torch.zeros(()))
    )
    original = tau.clone()
    breadcrumb_tensor(tau, 0.3, 0.1)
    assert torch.equal(tau, original)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="method.density"):
        Breadcrumbs(density=0.0)
    with pytest.raises(ConfigError, match="method.gamma"):
        Breadcrumbs(gamma=1.0)
