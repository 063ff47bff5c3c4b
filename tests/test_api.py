"""taskmerge.merge on plain nn.Modules and state dicts, against closed-form answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import taskmerge


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
