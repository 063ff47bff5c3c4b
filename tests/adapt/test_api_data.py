"""The data-using merges through the Python API (given small loaders)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import taskmerge
from taskmerge.errors import ConfigError


def models():  # noqa: ANN201
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5))
    tuned = {}
    for i, task in enumerate(("a", "b")):
        model = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
        tuned[task] = model
    heads = {t: nn.Linear(5, 3).requires_grad_(False) for t in tuned}
    gen = torch.Generator().manual_seed(9)
    data = {t: [(torch.randn(8, 4, generator=gen), torch.zeros(8))] for t in tuned}
    return base, tuned, heads, data


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("adamerging", {"steps": 2, "granularity": "task"}),
        ("regmean", {"num_samples": 8}),
        ("fisher", {"num_samples": 4}),
    ],
)
def test_data_methods_merge_through_the_api(method: str, options: dict) -> None:
    base, tuned, heads, data = models()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = taskmerge.merge(base, tuned, method, data=data, heads=heads, **options)
    assert isinstance(merged, nn.Module)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    state = merged.state_dict()
    assert any(not torch.equal(state[k], before[k]) for k in state)
    if method == "adamerging":  # two Adam steps of at most lr = 1e-3 from 0.3 per coefficient
        for k in state:
            taus = [m.state_dict()[k] - before[k] for m in tuned.values()]
            gap = (state[k] - before[k] - 0.3 * sum(taus)).abs()
            assert (gap <= 2.001e-3 * sum(t.abs() for t in taus) + 1e-6).all(), k


def test_data_methods_without_data_say_what_to_pass() -> None:
    base, tuned, heads, _ = models()
    with pytest.raises(ConfigError, match="pass data=") as error:
        taskmerge.merge(base, tuned, "regmean")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="nn.Module"):
        taskmerge.merge(base.state_dict(), tuned, "fisher", data={}, heads=heads)
