"""CART (arXiv:2412.12153) against a float64 rewrite (full SVDs of the centred task vectors)."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.build import build_method
from taskmerge.merging.cart import CART, cart_rank, is_cart_target
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.checkpoints import random_state

pytestmark = pytest.mark.usefixtures("one_thread")


def vectors(count: int) -> dict[str, TaskVector]:
    return {
        f"T{i}": TaskVector(
            {k: v for k, v in random_state(i + 1, 0.1).items() if v.is_floating_point()}
        )
        for i in range(count)
    }


def paper_cart(pretrained: dict, tvs: dict, ratio: float, lam: float) -> dict:
    """theta_avg + lam * sum_t SVD_r(theta_t - theta_avg) (attn / mlp matrices), float64."""
    out = {}
    for name, base in pretrained.items():
        finetuned = [base.double() + tv.vector[name].double() for tv in tvs.values()]
        average = torch.stack(finetuned).mean(0)
        total = torch.zeros_like(average)
        if ("attn" in name or "mlp" in name) and "bias" not in name and average.ndim == 2:
            r = max(1, int(ratio * min(average.shape)))
            for theta in finetuned:
                u, s, vh = torch.linalg.svd(theta - average, full_matrices=False)
                total += u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
        out[name] = average + lam * total
    return out


@pytest.mark.parametrize(("count", "ratio"), [(3, 0.3), (4, 0.5), (5, 0.2)])
def test_cart_equals_the_float64_rewrite(count: int, ratio: float) -> None:
    tvs = vectors(count)
    pretrained = {k: torch.randn(v.shape) for k, v in tvs["T0"].vector.items()}
    before = {task: {k: v.clone() for k, v in tv.vector.items()} for task, tv in tvs.items()}
    method = build_method("cart", {"initial_rank_ratio": ratio, "grid": [0.5, 2.0]})
    candidates = list(method.candidates(pretrained, tvs))
    family = method.affine_family(pretrained, tvs)
    assert [c.hyperparameters for c in candidates] == [{"scaling_coef": 0.5}, {"scaling_coef": 2.0}]
    for index, (candidate, lam) in enumerate(zip(candidates, [0.5, 2.0], strict=True)):
        expected = paper_cart(pretrained, tvs, ratio, lam)
        affine = dict(family.candidate(pretrained, index).shared)
        for name, value in dict(candidate.shared).items():
            torch.testing.assert_close(value.double(), expected[name], rtol=0, atol=1e-6)
            assert torch.equal(affine[name], value)
    for task, tv in tvs.items():
        for name, value in tv.vector.items():
            assert torch.equal(value, before[task][name])


def test_two_tasks_and_the_rank_extremes_give_the_average() -> None:
    # T = 2: the centred vectors are X and -X, their truncations cancel for any lambda
    tvs = vectors(2)
    mean = {k: (tvs["T0"].vector[k] + tvs["T1"].vector[k]) / 2 for k in tvs["T0"].vector}
    for options in ({"scaling_coef": 3.0}, {"scaling_coef": 1.0, "initial_rank_ratio": 0.5}):
        merged = CART(**options).merge(tvs).vector
        for name, value in merged.items():
            torch.testing.assert_close(value, mean[name], atol=1e-6, rtol=0)
    three = vectors(3)
    mean3 = {k: sum(tv.vector[k] for tv in three.values()) / 3 for k in three["T0"].vector}
    for ratio in (0.0, 1.0):  # nothing kept / the whole centred vectors (sum zero)
        merged = CART(initial_rank_ratio=ratio, scaling_coef=2.0).merge(three).vector
        for name, value in merged.items():
            torch.testing.assert_close(value, mean3[name], atol=1e-6, rtol=0)


def test_rank_and_name_rules_and_errors() -> None:
    assert cart_rank((768, 3072), 0.12) == 92 and cart_rank((4, 6), 0.01) == 1
    assert is_cart_target("transformer.resblocks.0.attn.in_proj_weight", torch.Size([9, 3]))
    assert is_cart_target("transformer.resblocks.0.mlp.c_fc.weight", torch.Size([12, 3]))
    assert not is_cart_target("transformer.resblocks.0.attn.in_proj_bias", torch.Size([9]))
    assert not is_cart_target("transformer.resblocks.0.ln_1.weight", torch.Size([3]))
    assert not is_cart_target("proj", torch.Size([3, 2]))
    with pytest.raises(ConfigError, match="initial_rank_ratio"):
        CART(initial_rank_ratio=1.5)
    with pytest.raises(ConfigError, match="does not take apply_lines"):
        build_method("cart", {"apply_lines": True})
