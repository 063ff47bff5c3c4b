"""EMR-merging (arXiv:2405.17461) against a hand-computed case and a float64 rewrite."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.build import build_method
from taskmerge.merging.emr import EMRMerging
from taskmerge.vectors.task_vector import TaskVector
from tests.helpers.checkpoints import random_state

pytestmark = pytest.mark.usefixtures("one_thread")


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_hand_computed_elect_mask_rescale() -> None:
    tvs = {"A": TaskVector({"w": t(1, -2, 0.5)}), "B": TaskVector({"w": t(-3, 1, 0.5)})}
    pretrained = {"w": t(10, 10, 10)}
    # sum = (-2, -1, 1): gamma = (-1, -1, 1); tau_uni = (-3, -2, 0.5)
    # M_A = (0, 1, 1), M_B = (1, 0, 1)
    # lambda_A = mean|tau_A| / mean|M_A tau_uni| = 3.5 / 2.5; lambda_B = 4.5 / 3.5
    method = EMRMerging()
    [candidate] = method.candidates(pretrained, tvs)
    assert method.rescalers == pytest.approx({"A": 1.4, "B": 9 / 7})
    torch.testing.assert_close(candidate.for_task("A")["w"], t(10, 10 - 2.8, 10 + 0.7))
    torch.testing.assert_close(candidate.for_task("B")["w"], t(10 - 27 / 7, 10, 10 + 4.5 / 7))
    assert method.details() == {"emr_rescalers": method.rescalers}
    # a zero sum elects -1: the negative entries survive
    zero = EMRMerging().merge({"A": TaskVector({"w": t(1, -1)}), "B": TaskVector({"w": t(-1, 1)})})
    assert torch.equal(zero.vector["w"], t(-1, -1))


def paper_emr(pretrained: dict, tvs: dict[str, TaskVector]) -> dict[str, dict]:
    """Elect / mask / rescale on each parameter's stacked tasks, float64."""
    names = list(pretrained)
    stacks = {n: torch.stack([tv.vector[n].double() for tv in tvs.values()]) for n in names}
    unified, masks = {}, {}
    for n, stack in stacks.items():
        gamma = torch.where(stack.sum(0) > 0, 1.0, -1.0).double()
        masks[n] = stack * gamma > 0
        unified[n] = gamma * (stack.abs() * masks[n]).amax(0)
    out = {}
    for i, task in enumerate(tvs):
        scale = sum(stacks[n][i].abs().mean() for n in names)
        new = sum((unified[n] * masks[n][i]).abs().mean() for n in names)
        out[task] = {
            n: pretrained[n].double() + (scale / new) * unified[n] * masks[n][i] for n in names
        }
    return out


@pytest.mark.parametrize("count", [2, 4])
def test_emr_per_task_models_equal_the_float64_rewrite(count: int) -> None:
    tvs = {
        f"T{i}": TaskVector(
            {k: v for k, v in random_state(i + 1, 0.1).items() if v.is_floating_point()}
        )
        for i in range(count)
    }
    pretrained = {k: torch.randn(v.shape) for k, v in tvs["T0"].vector.items()}
    before = {task: {k: v.clone() for k, v in tv.vector.items()} for task, tv in tvs.items()}
    [candidate] = build_method("emr", {}).candidates(pretrained, tvs)
    assert candidate.per_task and set(candidate.per_task) == set(tvs)
    expected = paper_emr(pretrained, tvs)
    for task in tvs:
        for name, value in dict(candidate.for_task(task)).items():
            torch.testing.assert_close(value.double(), expected[task][name], rtol=0, atol=1e-6)
    for task, tv in tvs.items():
        for name, value in tv.vector.items():
            assert torch.equal(value, before[task][name])


def test_emr_refuses_lines() -> None:
    with pytest.raises(ConfigError, match="does not take apply_lines"):
        build_method("emr", {"apply_lines": True})
    with pytest.raises(ConfigError):
        build_method("emr", {"k": 3})
