"""taskmerge.merge on plain nn.Modules and state dicts, against closed-form answers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import taskmerge
from taskmerge.errors import ConfigError


def _model(weight: list[float], bias: float) -> nn.Linear:
    model = nn.Linear(len(weight), 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weight]))
        model.bias.fill_(bias)
    return model


@pytest.fixture
def models() -> tuple[nn.Module, dict[str, nn.Module]]:
    base = _model([1.0, 1.0, 1.0], 0.0)
    return base, {"a": _model([2.0, 1.0, 3.0], 1.0), "b": _model([1.0, 4.0, 2.0], 3.0)}


def test_sum_is_closed_form_and_inputs_are_untouched(models) -> None:  # noqa: ANN001
    base, tuned = models
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = taskmerge.merge(base, tuned, method="sum", scaling_coef=0.5)
    assert isinstance(merged, nn.Linear) and merged is not base
    # tau_a = [1, 0, 2 | 1], tau_b = [0, 3, 1 | 3] -> theta0 + 0.5 * (tau_a + tau_b)
    assert torch.allclose(merged.weight, torch.tensor([[1.5, 2.5, 2.5]]))
    assert torch.allclose(merged.bias, torch.tensor([2.0]))
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    assert torch.equal(tuned["a"].weight, torch.tensor([[2.0, 1.0, 3.0]]))


def test_ties_on_state_dicts(models) -> None:  # noqa: ANN001
    base, tuned = models
    state = taskmerge.merge(
        base.state_dict(),
        {k: m.state_dict() for k, m in tuned.items()},
        method="ties",
        k=100,
        agg="mean",
        scaling_coef=1.0,
    )
    # all deltas are >= 0: elected sign +, disjoint mean over the non-zero entries
    assert torch.allclose(state["weight"], torch.tensor([[2.0, 4.0, 2.5]]))
    assert torch.allclose(state["bias"], torch.tensor([2.0]))


def test_average_and_per_task_methods(models) -> None:  # noqa: ANN001
    base, tuned = models
    avg = taskmerge.merge(base, tuned, method="average", return_state_dict=True)
    assert torch.allclose(avg["weight"], torch.tensor([[1.5, 2.5, 2.5]]))
    per_task = taskmerge.merge(base, tuned, method="tall_mask", tall_mask_lambda=0.4)
    assert set(per_task) == {"a", "b"}
    # task a: |tau_a| > 0.4 |tau_b| keeps entries 0 and 2 of tau_MTL = [1, 3, 3]
    assert torch.allclose(per_task["a"].weight, torch.tensor([[2.0, 1.0, 4.0]]))


def test_clear_errors(models) -> None:  # noqa: ANN001
    base, tuned = models
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        taskmerge.merge(base, tuned, method="nope")
    with pytest.raises(ValueError, match="needs scaling_coef"):
        taskmerge.merge(base, tuned, method="sum")
    with pytest.raises(ValueError, match="tall_mask_lambda"):
        taskmerge.merge(base, tuned, method="tall_mask")


class Stack(nn.Module):
    """A stem and 3 residual blocks: the structure LiNeS reads."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.stem = nn.Linear(1, 1)
        self.blocks = nn.Sequential(*[nn.Linear(1, 1) for _ in range(3)])
        with torch.no_grad():
            for p in self.parameters():
                p.fill_(value)


def test_lines_scales_blocks_by_depth() -> None:
    base, tuned = Stack(0.0), {"a": Stack(1.0), "b": Stack(3.0)}
    merged = taskmerge.merge(base, tuned, method="sum", apply_lines=True, scaling_coef=0.4)
    # sum tau = 4, alpha = (||4|| / ||4||) / T = 0.5, block l: (0.5 + 0.4 * l / 2) * 4
    assert torch.allclose(merged.stem.weight, torch.tensor([[2.0]]))
    for layer, expected in enumerate([2.0, 2.8, 3.6]):
        assert torch.allclose(merged.blocks[layer].bias, torch.tensor([expected]))
    edited = taskmerge.merge(
        base, tuned, method="single_task", task_index=1, apply_lines=True, scaling_coef=0.2
    )
    # alpha 0.2, beta 0.8 on tau_b = 3: block l scaled by 0.2 + 0.8 * l / 2
    assert torch.allclose(edited.stem.bias, torch.tensor([0.6]))
    assert torch.allclose(edited.blocks[1].weight, torch.tensor([[3 * 0.6]]))


def test_negation_is_theta0_minus_alpha_tau(models) -> None:  # noqa: ANN001
    base, tuned = models
    merged = taskmerge.merge(base, tuned, method="negation", task_index=1, scaling_coef=0.5)
    # theta0 - 0.5 * tau_b, tau_b = [0, 3, 1 | 3]
    assert torch.allclose(merged.weight, torch.tensor([[1.0, -0.5, 0.5]]))
    assert torch.allclose(merged.bias, torch.tensor([-1.5]))


def test_lines_and_negation_errors(models) -> None:  # noqa: ANN001
    base, tuned = models
    states = {k: m.state_dict() for k, m in tuned.items()}
    with pytest.raises(ConfigError, match="nn.Module"):
        taskmerge.merge(base.state_dict(), states, "sum", apply_lines=True, scaling_coef=0.3)
    with pytest.raises(ConfigError, match="does not take apply_lines"):
        taskmerge.merge(base, tuned, "tall_mask", apply_lines=True, tall_mask_lambda=0.4)
    with pytest.raises(ValueError, match="needs scaling_coef"):
        taskmerge.merge(base, tuned, "single_task", apply_lines=True)
    with pytest.raises(ValueError, match="needs scaling_coef"):
        taskmerge.merge(base, tuned, "negation", task_index=0)
    with pytest.raises(ConfigError, match="task_index=2 is out of range for 2 tasks"):
        taskmerge.merge(base, tuned, "negation", task_index=2, scaling_coef=0.5)


def test_linearized_models_merge_and_add_up_exactly() -> None:
    """Through the linearized forward task arithmetic is exact: f_lin(theta0 + a tau_a + b tau_b)
    = f0 + a (f_lin(theta_a) - f0) + b (f_lin(theta_b) - f0)."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    tuned = {}
    for name in ("a", "b"):
        model = taskmerge.LinearizedEncoder(copy.deepcopy(base))
        with torch.no_grad():
            for param in model.encoder.parameters():
                param.add_(0.3 * torch.randn_like(param))
        tuned[name] = model
    merged = taskmerge.merge(
        taskmerge.LinearizedEncoder(copy.deepcopy(base)), tuned, "sum", scaling_coef=0.5
    )
    assert isinstance(merged, taskmerge.LinearizedEncoder)
    x = torch.randn(5, 3)
    with torch.no_grad():
        f0 = base(x)
        expected = f0 + 0.5 * (tuned["a"](x) - f0) + 0.5 * (tuned["b"](x) - f0)
        assert torch.allclose(merged(x), expected, atol=1e-5)
        assert not torch.allclose(base(x) * 0 + merged.encoder(x), expected, atol=1e-3)
    mixed = {"a": tuned["a"], "b": copy.deepcopy(base)}
    with pytest.raises(ConfigError, match="linearized models \\['a'\\] and non-linear"):
        taskmerge.merge(base, mixed, "sum", scaling_coef=0.5)
