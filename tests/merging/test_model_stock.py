"""Model Stock (arXiv:2403.19522) against a float64 rewrite from the paper and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.build import build_method
from taskmerge.merging.model_stock import ModelStock, interpolation_ratio
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.checkpoints import random_state

pytestmark = pytest.mark.usefixtures("one_thread")


def vectors(count: int, seed: int = 1) -> dict[str, TaskVector]:
    return {
        f"T{i}": TaskVector(
            {k: v for k, v in random_state(seed + i, 0.1).items() if v.is_floating_point()}
        )
        for i in range(count)
    }


def paper_model_stock(pretrained: dict, tvs: dict[str, TaskVector]) -> dict[str, torch.Tensor]:
    """Per layer: mean pairwise angle of the flattened task vectors (float64, a Gram matrix of
    the stacked tasks), t = k cos / ((k - 1) cos + 1), theta = t w_avg + (1 - t) theta0."""
    out = {}
    k = len(tvs)
    for name, base in pretrained.items():
        flat = torch.stack([tv.vector[name].double().flatten() for tv in tvs.values()])
        norms = flat.norm(dim=1)
        cos = (flat @ flat.T) / (norms[:, None] * norms[None, :])
        pairs = torch.triu_indices(k, k, offset=1)
        phi = torch.arccos(cos[pairs[0], pairs[1]].clamp(-1, 1)).mean()
        t = k * torch.cos(phi) / ((k - 1) * torch.cos(phi) + 1)
        finetuned_avg = torch.stack(
            [base.double() + tv.vector[name].double() for tv in tvs.values()]
        ).mean(0)
        out[name] = t * finetuned_avg + (1 - t) * base.double()
    return out


@pytest.mark.parametrize("count", [2, 3, 5])
def test_model_stock_equals_the_float64_rewrite_of_the_paper(count: int) -> None:
    tvs = vectors(count)
    pretrained = {k: torch.randn(v.shape, dtype=torch.float32) for k, v in tvs["T0"].vector.items()}
    before = {t: {k: v.clone() for k, v in tv.vector.items()} for t, tv in tvs.items()}
    [candidate] = build_method("model_stock", {}).candidates(pretrained, tvs)
    expected = paper_model_stock(pretrained, tvs)
    for name, value in dict(candidate.shared).items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.double(), expected[name], rtol=0, atol=1e-6)
    for task, tv in tvs.items():  # inputs untouched
        for name, value in tv.vector.items():
            assert torch.equal(value, before[task][name])


def test_identical_models_give_their_average_and_orthogonal_ones_the_anchor() -> None:
    a = torch.tensor([1.0, 2.0, 0.0, -1.0])
    b = torch.tensor([2.0, -1.0, 3.0, 0.0])  # <a, b> = 0
    same = ModelStock().merge({"x": TaskVector({"w": a}), "y": TaskVector({"w": a.clone()})})
    torch.testing.assert_close(same.vector["w"], a * (2 / (2 + 1e-8)))
    orthogonal = ModelStock().merge({"x": TaskVector({"w": a}), "y": TaskVector({"w": b})})
    torch.testing.assert_close(orthogonal.vector["w"], torch.zeros(4), atol=1e-7, rtol=0)
    # 60 degrees between two: cos = 1/2, t = 2 * 0.5 / (0.5 + 1) = 2/3
    c = torch.tensor([1.0, 0.0])
    d = torch.tensor([0.5, math.sqrt(3) / 2])
    merged = ModelStock().merge({"x": TaskVector({"w": c}), "y": TaskVector({"w": d})})
    torch.testing.assert_close(merged.vector["w"], (c + d) / 2 * (2 / 3), atol=1e-6, rtol=0)
    assert interpolation_ratio(math.pi / 3, 2) == pytest.approx(2 / 3)


def test_ignore_keys_take_the_plain_average_and_one_model_is_refused() -> None:
    tvs = vectors(3)
    merged = ModelStock(ignore_keys=["blocks.0.bias"]).merge(tvs).vector
    mean = sum(tv.vector["blocks.0.bias"] for tv in tvs.values()) / 3
    torch.testing.assert_close(merged["blocks.0.bias"], mean)
    with pytest.raises(ConfigError, match="at least 2"):
        ModelStock().merge(dict(list(tvs.items())[:1]))
    with pytest.raises(ConfigError, match="at least 2"):
        ModelStock().bind(None, ["A"])
